"""Small things every stage uses, each written once: stable hashes and seeded random generators, timestamps and
progress lines (:mod:`.helpers`), atomic writes and the cache folder (:mod:`.paths`), reading untrusted files
(:mod:`.fileio`), the data folder (:mod:`.datadir`), text made safe for a terminal (:mod:`.textsafe`) and the
type checks of configuration (:mod:`.options`). Import from the module that holds a name; this package imports
nothing on its own, so each stays cheap."""

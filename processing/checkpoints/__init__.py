"""Build time: everything that needs torch and the upstream packages (gfpgan, basicsr,
facexlib). It fetches and verifies checkpoints, builds stand-ins, exports the model store
the service runs, and holds the torch reference backend the tests compare with.

The run time (everything else in processing/) never imports this package; the import
contracts in the test suite (.importlinter) check that.
"""

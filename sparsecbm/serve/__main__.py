from sparsecbm.serve.cli import main

main()

import multiprocessing

from companion.cli.main import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen build starts the audio process through this executable
    raise SystemExit(main())

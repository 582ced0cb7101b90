"""Where finished sounds go on disk: the watched folder, named like a sample pack and written so a DAW
never sees half a file (``folder``), and the WAV format with the metadata chunks a sample browser
reads, the recipe among them (``wavfile``). The only code that writes sounds to disk; imports only
``models``."""

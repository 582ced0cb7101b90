"""The companion's configuration as checked data: the settings table, its file and command-line
overrides (``settings``), the pad rack's configuration (``padmap``) and the pad-to-category table
(``pads``). Every other part of the companion reads them; they import only ``models``."""

"""The live rig: MIDI input (``midi_in``), the voice mixer the audio callback runs (``mixer``), the audio
device (``audio_device``), the output stream and its own process (``audio_out``, ``audio_proc``,
``audio_child``), the pad rack that turns notes into sounds (``padrack``), and the wiring of all of it
to the engine (``rig``). It may import ``companion.engine`` and everything the engine may; MIDI and
audio libraries are imported only when the rig starts."""

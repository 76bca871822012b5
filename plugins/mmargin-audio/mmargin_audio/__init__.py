"""Audio plugin for mmargin: waveform margins in dB relative to the signal.

``mmargin_audio.space`` is the waveform perturbation space (band / time-window restriction,
dB and 16-bit round-trip reports, random-noise baseline); ``mmargin_audio.data`` loads the
committed spoken digits or a folder of WAV files; ``mmargin_audio.models`` holds the
keyword-spotting CNN and the Hugging Face loader. Importing this package imports nothing heavy.
"""

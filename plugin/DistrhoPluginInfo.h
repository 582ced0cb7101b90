// DPF metadata of the dd-companion instrument (one source, every format).
#ifndef DISTRHO_PLUGIN_INFO_H_INCLUDED
#define DISTRHO_PLUGIN_INFO_H_INCLUDED

#define DISTRHO_PLUGIN_BRAND "dd-companion"
#define DISTRHO_PLUGIN_NAME  "DD Companion"
#define DISTRHO_PLUGIN_URI   "urn:dd-companion:plugin"
#define DISTRHO_PLUGIN_CLAP_ID "org.dd-companion.plugin"
#define DISTRHO_PLUGIN_BRAND_ID Ddcp
#define DISTRHO_PLUGIN_UNIQUE_ID Ddpl

#define DISTRHO_PLUGIN_HAS_UI        0
#define DISTRHO_PLUGIN_IS_RT_SAFE    1
#define DISTRHO_PLUGIN_IS_SYNTH      1
#define DISTRHO_PLUGIN_NUM_INPUTS    0
#define DISTRHO_PLUGIN_NUM_OUTPUTS   2
#define DISTRHO_PLUGIN_WANT_MIDI_INPUT 1
#define DISTRHO_PLUGIN_WANT_STATE    1
#define DISTRHO_PLUGIN_WANT_FULL_STATE 1

#define DISTRHO_PLUGIN_VST3_CATEGORIES "Instrument|Drum"
#define DISTRHO_PLUGIN_CLAP_FEATURES   "instrument", "drum", "stereo"
#define DISTRHO_PLUGIN_LV2_CATEGORY    "lv2:InstrumentPlugin"

#endif

// One sound held in memory at the host rate, and the messages that move it between threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dd {

// Allocated, filled and freed by the worker thread only. The audio thread reads the buffers and
// owns the three bookkeeping fields at the end (no other thread touches them while it is alive).
struct Sample {
    std::vector<float> left, right;
    uint32_t frames = 0;
    int pad = -1;            // the note it was made for
    std::string path;        // the companion's file
    std::string recipe;      // the JSON recipe the companion stored in the file (model hash, seed, ...)
    // audio thread only
    int voices = 0;          // voices playing it now
    bool inStock = false;    // waiting in its pad's stock
    bool isCurrent = false;  // its pad's current sound
};

// worker -> audio
struct ToAudio {
    enum Kind : uint8_t { Stock, Current, Reload, Flush, Nothing };  // Current arms the next hit; Reload does not
    Kind kind = Nothing;
    uint8_t pad = 0;
    Sample* sample = nullptr;
};

// audio -> worker
struct ToWorker {
    enum Kind : uint8_t { Played, Release, Regenerate, Vary, Nothing };
    Kind kind = Nothing;
    uint8_t pad = 0;
    bool fromStock = false;  // Played: it was taken from the stock; Release: it left the stock unplayed
    Sample* sample = nullptr;
};

}  // namespace dd

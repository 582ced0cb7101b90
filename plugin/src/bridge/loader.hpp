// Reading a companion WAV into a Sample at the host rate (worker thread only: it allocates and does I/O).
#pragma once

#include <string>

#include "../core/sample.hpp"

namespace dd {

// Decode `path` (libsndfile), keep its recipe (the INFO comment, else the .json sidecar), resample
// to `hostRate` (libsoxr, high quality) when the file's rate differs. false + `error` on failure.
bool loadSample(const std::string& path, double hostRate, Sample& out, std::string& error);

bool fileExists(const std::string& path);

}  // namespace dd

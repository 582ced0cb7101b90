#include "loader.hpp"

#include <sndfile.h>
#include <soxr.h>
#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <vector>

namespace dd {

bool fileExists(const std::string& path) {
    struct stat st {};
    return !path.empty() && ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

static std::string sidecarRecipe(const std::string& path) {
    const size_t dot = path.rfind('.');
    if (dot == std::string::npos) return "";
    std::ifstream in(path.substr(0, dot) + ".json");
    if (!in) return "";
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

bool loadSample(const std::string& path, double hostRate, Sample& out, std::string& error) {
    SF_INFO info{};
    SNDFILE* file = sf_open(path.c_str(), SFM_READ, &info);
    if (file == nullptr) {
        error = "cannot read " + path + ": " + sf_strerror(nullptr);
        return false;
    }
    if (info.channels < 1 || info.frames <= 0 || info.samplerate <= 0) {
        sf_close(file);
        error = path + " has no audio";
        return false;
    }
    const size_t channels = static_cast<size_t>(info.channels);
    std::vector<float> raw(static_cast<size_t>(info.frames) * channels);
    const sf_count_t got = sf_readf_float(file, raw.data(), info.frames);
    const char* comment = sf_get_string(file, SF_STR_COMMENT);
    out.recipe = comment != nullptr ? comment : "";
    sf_close(file);
    if (got <= 0) {
        error = "cannot decode " + path;
        return false;
    }
    if (out.recipe.find("\"seed\"") == std::string::npos) out.recipe = sidecarRecipe(path);
    size_t frames = static_cast<size_t>(got);
    std::vector<float> stereo(frames * 2);  // mono plays on both sides; channels past two are dropped
    for (size_t i = 0; i < frames; ++i) {
        stereo[2 * i] = raw[i * channels];
        stereo[2 * i + 1] = raw[i * channels + (channels > 1 ? 1 : 0)];
    }
    if (std::fabs(hostRate - info.samplerate) > 1e-6) {
        const size_t outFrames = static_cast<size_t>(std::ceil(static_cast<double>(frames) * hostRate / info.samplerate));
        std::vector<float> resampled(outFrames * 2);
        const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
        const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
        size_t done = 0;
        const soxr_error_t err = soxr_oneshot(info.samplerate, hostRate, 2, stereo.data(), frames, nullptr,
                                              resampled.data(), outFrames, &done, &io, &quality, nullptr);
        if (err != nullptr) {
            error = std::string("cannot resample ") + path + ": " + err;
            return false;
        }
        resampled.resize(done * 2);
        stereo.swap(resampled);
        frames = done;
    }
    out.left.resize(frames);
    out.right.resize(frames);
    for (size_t i = 0; i < frames; ++i) {
        out.left[i] = stereo[2 * i];
        out.right[i] = stereo[2 * i + 1];
    }
    out.frames = static_cast<uint32_t>(frames);
    out.path = path;
    return true;
}

}  // namespace dd

// The audio thread's side of the plugin: per-pad stock and current sound, voices, choke groups.
//
// Everything is allocated by the constructor; process() never allocates, locks, waits or does I/O.
// Samples arrive from the worker through `inbox` and leave (played, released) through `outbox`.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "sample.hpp"
#include "spsc.hpp"

namespace dd {

constexpr int kPads = 128;
constexpr int kMaxStock = 8;
constexpr int kPolyphony = 32;
constexpr int kFadeSlots = 8;
constexpr int kRegenerateCC = 102;  // the companion's regenerate and variation modifier CCs
constexpr int kVaryCC = 103;

enum class Behaviour { New = 0, Keep = 1 };

struct Event {
    uint32_t frame = 0;  // offset inside the block
    uint8_t status = 0, data1 = 0, data2 = 0;
};

// choke group of a note (1 = the hats' group, 0 = none) and the groups a hit on it cuts (bit mask)
int chokeGroup(int note) noexcept;
uint32_t chokeCuts(int note) noexcept;
float velocityGain(int velocity) noexcept;  // (velocity / 127) ** 2, as the companion's live rig

class Rack {
public:
    explicit Rack(double rate = 48000.0, double fadeMs = 5.0);

    void setRate(double rate) noexcept;  // not while process() runs
    void setBehaviour(Behaviour b) noexcept { behaviour_ = b; }
    Behaviour behaviour() const noexcept { return behaviour_; }

    // render `frames` frames into out (overwritten), with `events` sorted by frame
    void process(const Event* events, uint32_t count, float* outL, float* outR, uint32_t frames) noexcept;

    // act on the pad hit last (parameters and CCs call these from the audio thread)
    void regenerateLast() noexcept { regenerate(lastPad_); }
    void varyLast() noexcept { send({ToWorker::Vary, static_cast<uint8_t>(lastPad_ < 0 ? 0 : lastPad_), false, nullptr}, lastPad_ >= 0); }

    // drop every sample (stock, current, voices) back to the worker; not while process() runs
    void clear() noexcept;

    int stocked(int pad) const noexcept { return pads_[static_cast<size_t>(pad)].count; }
    int stockedTotal() const noexcept { return stockedTotal_; }
    int activeVoices() const noexcept;
    int lastPad() const noexcept { return lastPad_; }
    uint32_t dropped() const noexcept { return dropped_; }

    SpscQueue<ToAudio> inbox{4096};
    SpscQueue<ToWorker> outbox{8192};

private:
    struct Pad {
        std::array<Sample*, kMaxStock> ring{};
        int head = 0, count = 0;
        Sample* current = nullptr;
        bool armed = false;  // the current sound was handed over (restored, varied): the next hit plays it
    };
    struct Voice {
        Sample* sample = nullptr;
        uint32_t pos = 0;
        float gain = 0.0f;
        int group = 0;
        int fade = -1;  // frames of fade left, -1 = not fading
        uint64_t age = 0;
    };

    void drainInbox() noexcept;
    void hit(int note, int velocity) noexcept;
    void regenerate(int pad) noexcept;
    void render(float* outL, float* outR, uint32_t from, uint32_t to) noexcept;
    void startVoice(Sample* s, float gain, int group) noexcept;
    void choke(uint32_t cuts) noexcept;
    void stopVoice(Voice& v) noexcept;
    Sample* popStock(Pad& p) noexcept;
    void setCurrent(Pad& p, Sample* s, bool armed) noexcept;
    void releaseIfUnused(Sample* s) noexcept;
    void send(const ToWorker& msg, bool really = true) noexcept;
    void flushOverflow() noexcept;

    std::array<Pad, kPads> pads_{};
    std::array<Voice, kPolyphony + kFadeSlots> voices_{};
    std::array<ToWorker, 512> overflow_{};  // messages the outbox had no room for, retried next block
    int overflowCount_ = 0;
    Behaviour behaviour_ = Behaviour::New;
    int fadeFrames_ = 240;
    double fadeMs_ = 5.0;
    uint64_t clock_ = 0;
    int lastPad_ = -1;
    int stockedTotal_ = 0;
    uint32_t dropped_ = 0;
    std::array<uint8_t, 128> ccValue_{};
};

}  // namespace dd

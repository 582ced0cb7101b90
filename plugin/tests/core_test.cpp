// Native unit test of the real-time core (Rack, SpscQueue, recipe and state codec), built with
// AddressSanitizer and UndefinedBehaviorSanitizer by `make core-test`. A stand-in worker owns and frees
// the samples exactly as the plugin's worker does, so a leak, a double free or a use after free fails.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <thread>
#include <vector>

#include "core/rack.hpp"
#include "core/recipe.hpp"
#include "core/spsc.hpp"

using namespace dd;

static int failures = 0;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            ++failures;                                                              \
        }                                                                            \
    } while (0)

namespace {

struct Worker {  // what the plugin's worker does with the rack's queues, without sockets or files
    explicit Worker(Rack& r) : rack(r) {}
    Rack& rack;
    std::set<Sample*> live;
    int played = 0, released = 0, unstocked = 0, regenerate = 0, vary = 0;

    Sample* make(int pad, uint32_t frames, float value) {
        auto* s = new Sample();
        s->pad = pad;
        s->frames = frames;
        s->left.assign(frames, value);
        s->right.assign(frames, -value);
        s->path = "pad" + std::to_string(pad) + "_" + std::to_string(value);
        live.insert(s);
        return s;
    }
    void stock(int pad, Sample* s) { CHECK(rack.inbox.push({ToAudio::Stock, static_cast<uint8_t>(pad), s})); }
    void drain() {
        ToWorker m;
        while (rack.outbox.pop(m)) {
            if (m.kind == ToWorker::Played) ++played;
            if (m.kind == ToWorker::Regenerate) ++regenerate;
            if (m.kind == ToWorker::Vary) ++vary;
            if (m.kind == ToWorker::Release) {
                if (m.fromStock) ++unstocked;
                if (m.sample != nullptr) {
                    CHECK(live.erase(m.sample) == 1);  // freed once, and only what was allocated
                    delete m.sample;
                    ++released;
                }
            }
        }
    }
    ~Worker() {
        for (Sample* s : live) delete s;
    }
};

void run(Rack& rack, std::vector<Event> events, std::vector<float>& l, std::vector<float>& r, uint32_t frames) {
    l.assign(frames, 1.0f);  // garbage the rack must overwrite
    r.assign(frames, 1.0f);
    rack.process(events.data(), static_cast<uint32_t>(events.size()), l.data(), r.data(), frames);
}

Event noteOn(uint32_t frame, int note, int velocity) {
    return Event{frame, 0x99, static_cast<uint8_t>(note), static_cast<uint8_t>(velocity)};
}

void testSpsc() {
    SpscQueue<int> q(3);
    CHECK(q.capacity() == 3);
    CHECK(q.push(1) && q.push(2) && q.push(3));
    CHECK(!q.push(4));  // full: refused, not overwritten
    int v = 0;
    CHECK(q.pop(v) && v == 1);
    CHECK(q.push(4));
    CHECK(q.pop(v) && v == 2 && q.pop(v) && v == 3 && q.pop(v) && v == 4 && !q.pop(v));

    SpscQueue<uint64_t> big(1024);  // two threads: every item arrives once, in order
    const uint64_t n = 200000;
    std::thread producer([&] {
        for (uint64_t i = 1; i <= n;) {
            if (big.push(i)) ++i;
        }
    });
    uint64_t expect = 1, got = 0;
    while (expect <= n) {
        if (big.pop(got)) {
            CHECK(got == expect);
            ++expect;
        }
    }
    producer.join();
}

void testSampleAccurateHit() {
    Rack rack(48000.0);
    Worker w{rack};
    Sample* s = w.make(36, 100, 0.5f);
    w.stock(36, s);
    std::vector<float> l, r;
    run(rack, {}, l, r, 64);  // the stock arrives at the start of a block
    CHECK(rack.stockedTotal() == 1);
    for (float x : l) CHECK(x == 0.0f);  // silence overwrites the host's buffer
    run(rack, {noteOn(37, 36, 127)}, l, r, 64);
    for (uint32_t i = 0; i < 37; ++i) CHECK(l[i] == 0.0f);
    for (uint32_t i = 37; i < 64; ++i) CHECK(l[i] == 0.5f && r[i] == -0.5f);  // from exactly the event's frame
    run(rack, {}, l, r, 64);
    for (uint32_t i = 0; i < 64; ++i) CHECK(l[i] == (i < 100 - 27 ? 0.5f : 0.0f));  // and to its last frame
    w.drain();
    CHECK(w.played == 1 && w.released == 0);  // still the pad's current sound: kept
    CHECK(rack.stockedTotal() == 0);
}

void testVelocityAndEmptyPad() {
    Rack rack(48000.0);
    Worker w{rack};
    std::vector<float> l, r;
    run(rack, {noteOn(0, 38, 127)}, l, r, 32);  // nothing stocked: silence, no wait
    for (float x : l) CHECK(x == 0.0f);
    w.stock(38, w.make(38, 10, 1.0f));
    run(rack, {noteOn(0, 38, 64)}, l, r, 32);
    const float g = (64.0f / 127.0f) * (64.0f / 127.0f);
    CHECK(std::fabs(l[0] - g) < 1e-7f && std::fabs(velocityGain(64) - g) < 1e-7f);
    CHECK(velocityGain(127) == 1.0f && velocityGain(0) == 0.0f);
}

void testNewAndKeep() {
    Rack rack(48000.0);
    Worker w{rack};
    Sample* a = w.make(36, 8, 0.1f);
    Sample* b = w.make(36, 8, 0.2f);
    w.stock(36, a);
    w.stock(36, b);
    std::vector<float> l, r;
    run(rack, {noteOn(0, 36, 127), noteOn(16, 36, 127)}, l, r, 32);  // new mode: a, then b
    CHECK(l[0] == 0.1f && l[16] == 0.2f);
    run(rack, {noteOn(0, 36, 127)}, l, r, 32);  // stock empty: the last sound again
    CHECK(l[0] == 0.2f);
    w.drain();
    CHECK(w.released == 1);  // a: no longer current, finished playing -> handed back to be freed
    CHECK(w.live.count(b) == 1);

    rack.setBehaviour(Behaviour::Keep);
    Sample* c = w.make(36, 8, 0.3f);
    w.stock(36, c);
    run(rack, {noteOn(0, 36, 127)}, l, r, 32);
    CHECK(l[0] == 0.2f);  // keep: the current sound, though c is stocked
    rack.regenerateLast();  // keep + regenerate: the next stocked sound becomes the kept one
    run(rack, {noteOn(0, 36, 127)}, l, r, 32);
    CHECK(l[0] == 0.3f);
    w.drain();
    CHECK(w.regenerate == 1 && w.live.count(b) == 0);

    rack.setBehaviour(Behaviour::New);  // new + regenerate: the stock is thrown away
    w.stock(36, w.make(36, 8, 0.4f));
    w.stock(36, w.make(36, 8, 0.5f));
    run(rack, {}, l, r, 8);
    CHECK(rack.stockedTotal() == 2);
    rack.regenerateLast();
    CHECK(rack.stockedTotal() == 0);
    w.drain();
    CHECK(w.unstocked == 2);
    rack.varyLast();
    w.drain();
    CHECK(w.vary == 1);
}

void testArmedCurrentAndCC() {
    Rack rack(48000.0);
    Worker w{rack};
    Sample* restored = w.make(40, 8, 0.7f);
    CHECK(rack.inbox.push({ToAudio::Current, 40, restored}));
    w.stock(40, w.make(40, 8, 0.1f));
    std::vector<float> l, r;
    run(rack, {noteOn(0, 40, 127), noteOn(10, 40, 127)}, l, r, 32);
    CHECK(l[0] == 0.7f);   // a restored sound plays on the next hit...
    CHECK(l[10] == 0.1f);  // ...and the one after takes the stock (the 8-frame restored sound has ended)
    Sample* reloaded = w.make(40, 8, 0.9f);  // the same sound again after a host rate change: not armed
    CHECK(rack.inbox.push({ToAudio::Reload, 40, reloaded}));
    w.stock(40, w.make(40, 8, 0.2f));
    run(rack, {noteOn(0, 40, 127)}, l, r, 32);
    CHECK(l[0] == 0.2f);  // the stock comes next, as before the change
    Event cc{5, 0xB0, kRegenerateCC, 127};
    run(rack, {cc}, l, r, 8);
    w.drain();
    CHECK(w.regenerate == 1);
    run(rack, {Event{0, 0xB0, kRegenerateCC, 100}}, l, r, 8);  // still held: no second edge
    w.drain();
    CHECK(w.regenerate == 1);
}

void testChoke() {
    Rack rack(1000.0, 5.0);  // 5 frames of fade
    Worker w{rack};
    w.stock(46, w.make(46, 100, 1.0f));
    w.stock(42, w.make(42, 100, 0.25f));
    CHECK(chokeGroup(46) == 1 && chokeCuts(42) == 2u && chokeCuts(44) == 2u && chokeCuts(36) == 0u);
    std::vector<float> l, r;
    run(rack, {noteOn(0, 46, 127), noteOn(20, 42, 127)}, l, r, 40);
    CHECK(l[19] == 1.0f);
    for (int k = 0; k < 5; ++k) CHECK(std::fabs(l[static_cast<size_t>(20 + k)] - (0.25f + (5.0f - static_cast<float>(k)) / 5.0f)) < 1e-6f);
    for (size_t i = 25; i < 40; ++i) CHECK(l[i] == 0.25f);  // the open hat is gone
}

void testPolyphonySteals() {
    Rack rack(1000.0, 4.0);
    Worker w{rack};
    std::vector<float> l, r;
    for (int k = 0; k < kPolyphony + 4; ++k) {
        Sample* s = w.make(50, 1000, 0.01f);
        CHECK(rack.inbox.push({ToAudio::Current, 50, s}));
        run(rack, {noteOn(0, 50, 127)}, l, r, 1);
    }
    CHECK(rack.activeVoices() <= kPolyphony + kFadeSlots);
    run(rack, {}, l, r, 8);  // the stolen ones have faded out
    CHECK(rack.activeVoices() == kPolyphony);
    CHECK(std::fabs(l[7] - 0.01f * kPolyphony) < 1e-5f);
    for (int k = 0; k < 3 * (kPolyphony + kFadeSlots); ++k) {  // a roll faster than the fades: never crashes
        Sample* s = w.make(50, 1000, 0.01f);
        CHECK(rack.inbox.push({ToAudio::Current, 50, s}));
        run(rack, {noteOn(0, 50, 127), noteOn(0, 50, 127)}, l, r, 1);
        w.drain();
    }
    CHECK(rack.activeVoices() <= kPolyphony + kFadeSlots);
    rack.clear();
    w.drain();
    CHECK(rack.activeVoices() == 0);
    CHECK(w.live.empty());  // everything handed back and freed by the worker
}

void testOverflowIsRetried() {
    Rack rack(48000.0);
    Worker w{rack};
    w.stock(36, w.make(36, 4, 0.5f));
    std::vector<float> l, r;
    run(rack, {}, l, r, 4);
    std::vector<Event> many(1024, noteOn(0, 36, 127));  // far more messages than a block needs; worker not draining
    for (int k = 0; k < 20; ++k) run(rack, many, l, r, 4);
    const uint32_t dropped = rack.dropped();
    CHECK(dropped > 0);  // 20480 messages, room for 16383 + 512 retried later: the rest counted, nothing crashes
    w.drain();
    run(rack, {}, l, r, 4);  // the overflow goes out once there is room
    w.drain();
    CHECK(w.played == static_cast<int>(20 * 1024 - dropped));
}

void testRecipeAndState() {
    const std::string recipe = R"({"category": "kick", "seed": 1234, "recipe": {"model_hash": "abc", "steps": 4, "sampler": "v-ddim"}})";
    CHECK(jsonField(recipe, "category") == "kick");
    CHECK(jsonField(recipe, "seed") == "1234");
    CHECK(jsonField(recipe, "model_hash") == "abc");
    CHECK(jsonField(recipe, "steps") == "4");
    CHECK(jsonField(recipe, "missing").empty());
    CHECK(jsonField(R"({"a": "say \"hi\"", "b": 1})", "a") == "say \"hi\"");
    std::vector<PadRecord> pads = {{36, "/x/kick 1.wav", recipe}, {46, "/x/oh.wav", "{\"seed\": 5}"}};
    std::vector<PadRecord> back;
    std::string error;
    CHECK(decodePads(encodePads(pads), back, error));
    CHECK(back.size() == 2 && back[0].note == 36 && back[0].path == "/x/kick 1.wav" && back[0].recipe == recipe);
    CHECK(back[1].note == 46 && back[1].recipe == "{\"seed\": 5}");
    CHECK(decodePads("", back, error) && back.empty());
    CHECK(!decodePads("something else\n", back, error) && error.find("dd-plugin-pads 1") != std::string::npos);
    CHECK(!decodePads("dd-plugin-pads 1\n200\t/a\t{}\n", back, error) && error.find("0..127") != std::string::npos);
    CHECK(!decodePads("dd-plugin-pads 1\n36 /a\n", back, error) && error.find("note<TAB>path") != std::string::npos);
    CHECK(std::string(defaultCategory(36)) == "kick" && std::string(defaultCategory(42)) == "closed_hat");
    CHECK(std::string(defaultCategory(46)) == "open_hat" && std::string(defaultCategory(20)).empty());
    CHECK(defaultPads().size() == 16);
    std::vector<PadSpec> specs;
    CHECK(parseNotes("", specs, error) && specs.size() == 16 && specs[0].note == 36 && specs[0].category == "kick");
    CHECK(parseNotes("36, 46 60=fx", specs, error) && specs.size() == 3 && specs[1].category == "open_hat");
    CHECK(specs[2].note == 60 && specs[2].category == "fx" && formatNotes(specs) == "36 46 60=fx");
    CHECK(!parseNotes("36 300", specs, error) && error.find("'300'") != std::string::npos);
    CHECK(!parseNotes("20", specs, error) && error.find("20=perc") != std::string::npos);
    CHECK(!parseNotes("36 36", specs, error) && error.find("twice") != std::string::npos);
    CHECK(specs.size() == 3);  // a refused text leaves the list as it was
}

}  // namespace

int main() {
    testSpsc();
    testSampleAccurateHit();
    testVelocityAndEmptyPad();
    testNewAndKeep();
    testArmedCurrentAndCC();
    testChoke();
    testPolyphonySteals();
    testOverflowIsRetried();
    testRecipeAndState();
    if (failures != 0) {
        std::fprintf(stderr, "core_test: %d check(s) failed\n", failures);
        return 1;
    }
    std::printf("core_test: all checks passed\n");
    return 0;
}

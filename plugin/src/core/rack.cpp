#include "rack.hpp"

#include <algorithm>
#include <cmath>

namespace dd {

int chokeGroup(int note) noexcept { return note == 46 ? 1 : 0; }  // the open hat rings until a closed hat

uint32_t chokeCuts(int note) noexcept { return (note == 42 || note == 44) ? (1u << 1) : 0u; }

float velocityGain(int velocity) noexcept {
    const float v = static_cast<float>(std::clamp(velocity, 0, 127)) / 127.0f;
    return v * v;
}

Rack::Rack(double rate, double fadeMs) : fadeMs_(fadeMs) { setRate(rate); }

void Rack::setRate(double rate) noexcept {
    fadeFrames_ = std::max(1, static_cast<int>(rate * fadeMs_ / 1000.0));
}

void Rack::process(const Event* events, uint32_t count, float* outL, float* outR, uint32_t frames) noexcept {
    flushOverflow();
    drainInbox();
    std::fill(outL, outL + frames, 0.0f);
    std::fill(outR, outR + frames, 0.0f);
    uint32_t at = 0;
    for (uint32_t i = 0; i < count; ++i) {
        const Event& e = events[i];
        const uint32_t frame = std::min(e.frame, frames);
        if (frame > at) {
            render(outL, outR, at, frame);
            at = frame;
        }
        const uint8_t kind = e.status & 0xF0;
        if (kind == 0x90 && e.data2 > 0) {
            hit(e.data1 & 0x7F, e.data2);
        } else if (kind == 0xB0) {
            const int number = e.data1 & 0x7F;
            const bool rising = e.data2 >= 64 && ccValue_[static_cast<size_t>(number)] < 64;
            ccValue_[static_cast<size_t>(number)] = e.data2;
            if (rising && number == kRegenerateCC) regenerateLast();
            if (rising && number == kVaryCC) varyLast();
        }
    }
    if (at < frames) render(outL, outR, at, frames);
}

void Rack::drainInbox() noexcept {
    ToAudio msg;
    while (inbox.pop(msg)) {
        Pad& p = pads_[msg.pad & 0x7F];
        Sample* s = msg.sample;
        switch (msg.kind) {
        case ToAudio::Stock:
            if (p.count >= kMaxStock) {  // cannot happen with a correct worker; never lose the buffer
                send({ToWorker::Release, msg.pad, true, s});
                break;
            }
            s->inStock = true;
            p.ring[static_cast<size_t>((p.head + p.count) % kMaxStock)] = s;
            ++p.count;
            ++stockedTotal_;
            break;
        case ToAudio::Current:
            setCurrent(p, s, true);
            break;
        case ToAudio::Reload:  // the same sound again at a new host rate: the stock still comes next
            setCurrent(p, s, false);
            break;
        case ToAudio::Flush:
            while (p.count > 0) {
                Sample* old = popStock(p);
                send({ToWorker::Release, msg.pad, true, nullptr});  // counted as unstocked...
                releaseIfUnused(old);                               // ...and freed
            }
            break;
        case ToAudio::Nothing:
            break;
        }
    }
}

Sample* Rack::popStock(Pad& p) noexcept {
    Sample* s = p.ring[static_cast<size_t>(p.head)];
    p.ring[static_cast<size_t>(p.head)] = nullptr;
    p.head = (p.head + 1) % kMaxStock;
    --p.count;
    --stockedTotal_;
    s->inStock = false;
    return s;
}

void Rack::setCurrent(Pad& p, Sample* s, bool armed) noexcept {
    Sample* old = p.current;
    p.current = s;
    p.armed = armed;
    if (s != nullptr) s->isCurrent = true;
    if (old != nullptr && old != s) {
        old->isCurrent = false;
        releaseIfUnused(old);
    }
}

void Rack::hit(int note, int velocity) noexcept {
    Pad& p = pads_[static_cast<size_t>(note)];
    lastPad_ = note;
    Sample* s = nullptr;
    bool popped = false;
    if (behaviour_ == Behaviour::New) {
        if (p.current != nullptr && p.armed) {
            s = p.current;
        } else if (p.count > 0) {
            s = popStock(p);
            popped = true;
        } else {
            s = p.current;  // nothing new yet: the last sound again rather than silence
        }
    } else {
        if (p.current != nullptr) {
            s = p.current;
        } else if (p.count > 0) {
            s = popStock(p);
            popped = true;
        }
    }
    const uint32_t cuts = chokeCuts(note);
    if (cuts != 0) choke(cuts);
    if (s == nullptr) return;  // an empty pad is silent, never a wait
    if (popped) setCurrent(p, s, false);
    p.armed = false;
    startVoice(s, velocityGain(velocity), chokeGroup(note));
    send({ToWorker::Played, static_cast<uint8_t>(note), popped, s});
}

void Rack::regenerate(int pad) noexcept {
    if (pad < 0 || pad >= kPads) return;
    Pad& p = pads_[static_cast<size_t>(pad)];
    if (behaviour_ == Behaviour::Keep) {
        if (p.count > 0) {  // the next stocked sound becomes the kept one at once
            Sample* s = popStock(p);
            setCurrent(p, s, false);
            send({ToWorker::Played, static_cast<uint8_t>(pad), true, s});
        }
    } else {
        while (p.count > 0) {  // fresh sounds only
            Sample* old = popStock(p);
            send({ToWorker::Release, static_cast<uint8_t>(pad), true, nullptr});
            releaseIfUnused(old);
        }
    }
    send({ToWorker::Regenerate, static_cast<uint8_t>(pad), false, nullptr});
}

void Rack::startVoice(Sample* s, float gain, int group) noexcept {
    int sounding = 0;
    Voice* oldest = nullptr;
    for (Voice& v : voices_) {
        if (v.sample == nullptr || v.fade >= 0) continue;
        ++sounding;
        if (oldest == nullptr || v.age < oldest->age) oldest = &v;
    }
    if (sounding >= kPolyphony && oldest != nullptr) oldest->fade = fadeFrames_;  // steal, with a fade
    Voice* slot = nullptr;
    for (Voice& v : voices_) {
        if (v.sample == nullptr) {
            slot = &v;
            break;
        }
    }
    if (slot == nullptr) {  // every slot busy: cut the fading voice closest to its end
        for (Voice& v : voices_) {
            if (v.fade >= 0 && (slot == nullptr || v.fade < slot->fade)) slot = &v;
        }
        if (slot == nullptr) slot = oldest;
        if (slot == nullptr) return;
        stopVoice(*slot);
    }
    slot->sample = s;
    slot->pos = 0;
    slot->gain = gain;
    slot->group = group;
    slot->fade = -1;
    slot->age = ++clock_;
    ++s->voices;
}

void Rack::choke(uint32_t cuts) noexcept {
    for (Voice& v : voices_) {
        if (v.sample != nullptr && v.fade < 0 && v.group > 0 && (cuts & (1u << v.group)) != 0) v.fade = fadeFrames_;
    }
}

void Rack::stopVoice(Voice& v) noexcept {
    Sample* s = v.sample;
    v.sample = nullptr;
    v.fade = -1;
    if (s == nullptr) return;
    --s->voices;
    releaseIfUnused(s);
}

void Rack::render(float* outL, float* outR, uint32_t from, uint32_t to) noexcept {
    for (Voice& v : voices_) {
        if (v.sample == nullptr) continue;
        const Sample& s = *v.sample;
        const float* l = s.left.data();
        const float* r = s.right.data();
        uint32_t i = from;
        if (v.fade < 0) {
            const uint32_t n = std::min(to - from, s.frames - v.pos);
            for (uint32_t k = 0; k < n; ++k, ++i, ++v.pos) {
                outL[i] += l[v.pos] * v.gain;
                outR[i] += r[v.pos] * v.gain;
            }
        } else {
            const float step = 1.0f / static_cast<float>(fadeFrames_);
            for (; i < to && v.pos < s.frames && v.fade > 0; ++i, ++v.pos, --v.fade) {
                const float g = v.gain * static_cast<float>(v.fade) * step;
                outL[i] += l[v.pos] * g;
                outR[i] += r[v.pos] * g;
            }
            if (v.fade == 0) {
                stopVoice(v);
                continue;
            }
        }
        if (v.pos >= s.frames) stopVoice(v);
    }
}

void Rack::releaseIfUnused(Sample* s) noexcept {
    if (s != nullptr && s->voices == 0 && !s->inStock && !s->isCurrent) send({ToWorker::Release, 0, false, s});
}

void Rack::send(const ToWorker& msg, bool really) noexcept {
    if (!really) return;
    if (overflowCount_ == 0 && outbox.push(msg)) return;
    if (overflowCount_ < static_cast<int>(overflow_.size())) {
        overflow_[static_cast<size_t>(overflowCount_++)] = msg;
    } else {
        ++dropped_;  // only a worker stalled for thousands of hits gets here; the buffer leaks, nothing crashes
    }
}

void Rack::flushOverflow() noexcept {
    int done = 0;
    while (done < overflowCount_ && outbox.push(overflow_[static_cast<size_t>(done)])) ++done;
    if (done == 0) return;
    std::copy(overflow_.begin() + done, overflow_.begin() + overflowCount_, overflow_.begin());
    overflowCount_ -= done;
}

int Rack::activeVoices() const noexcept {
    return static_cast<int>(std::count_if(voices_.begin(), voices_.end(), [](const Voice& v) { return v.sample != nullptr; }));
}

void Rack::clear() noexcept {
    drainInbox();
    for (Voice& v : voices_) stopVoice(v);
    for (int n = 0; n < kPads; ++n) {
        Pad& p = pads_[static_cast<size_t>(n)];
        while (p.count > 0) {
            Sample* old = popStock(p);
            send({ToWorker::Release, static_cast<uint8_t>(n), true, nullptr});
            releaseIfUnused(old);
        }
        setCurrent(p, nullptr, false);
    }
}

}  // namespace dd

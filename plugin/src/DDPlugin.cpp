// The dd-companion instrument: DPF glue around the Rack (audio thread) and the Companion (worker).
#include <cstdlib>
#include <cstring>
#include <memory>

#include "DistrhoPlugin.hpp"
#include "bridge/companion.hpp"
#include "core/rack.hpp"
#include "core/recipe.hpp"

START_NAMESPACE_DISTRHO

namespace {
enum Param : uint32_t { kBehaviour, kStock, kRegenerate, kVary, kStatus, kStocked, kParamCount };
enum StateKey : uint32_t { kHostKey, kPortKey, kNotesKey, kPadsKey, kStatusKey, kStateCount };
constexpr uint32_t kMaxEvents = 1024;
}  // namespace

class DDPlugin : public Plugin {
public:
    DDPlugin() : Plugin(kParamCount, 0, kStateCount), rack_(getSampleRate()) {
        if (!isDummyInstance()) {  // hosts make a dummy to read the metadata: it opens no socket
            companion_ = std::make_unique<dd::Companion>(rack_, getSampleRate());
            // a new instance looks where DD_COMPANION_HOST / DD_COMPANION_PORT say, else 127.0.0.1:9000;
            // a project's saved state then sets its own
            const char* host = std::getenv("DD_COMPANION_HOST");
            const char* port = std::getenv("DD_COMPANION_PORT");
            const long p = port != nullptr ? std::strtol(port, nullptr, 10) : 0;
            companion_->setEndpoint(host != nullptr && host[0] != '\0' ? host : "127.0.0.1",
                                    p >= 1 && p <= 65535 ? static_cast<int>(p) : 9000);
            companion_->setStockTarget(2);
            const char* notes = std::getenv("DD_COMPANION_NOTES");  // the default set of notes, else 36..51
            if (!setNotes(notes != nullptr ? notes : "")) setNotes("");
        }
    }

protected:
    const char* getLabel() const override { return "DDCompanion"; }
    const char* getDescription() const override {
        return "Plays sounds from the running dd-companion: a stock per pad, sample-accurate hits.";
    }
    const char* getMaker() const override { return "dd-companion"; }
    const char* getHomePage() const override { return "https://github.com/dd-companion"; }
    const char* getLicense() const override { return "MIT"; }
    uint32_t getVersion() const override { return d_version(0, 1, 0); }
    int64_t getUniqueId() const override { return d_cconst('D', 'd', 'p', 'l'); }

    void initParameter(uint32_t index, Parameter& p) override {
        switch (index) {
        case kBehaviour:
            p.hints = kParameterIsAutomatable | kParameterIsInteger;
            p.name = "Behaviour";
            p.symbol = "behaviour";
            p.ranges.def = 0.0f;
            p.ranges.min = 0.0f;
            p.ranges.max = 1.0f;
            p.enumValues.count = 2;
            p.enumValues.restrictedMode = true;
            p.enumValues.values = new ParameterEnumerationValue[2];
            p.enumValues.values[0].value = 0.0f;
            p.enumValues.values[0].label = "new on every hit";
            p.enumValues.values[1].value = 1.0f;
            p.enumValues.values[1].label = "keep";
            break;
        case kStock:
            p.hints = kParameterIsAutomatable | kParameterIsInteger;
            p.name = "Stock per pad";
            p.symbol = "stock";
            p.ranges.def = 2.0f;
            p.ranges.min = 0.0f;
            p.ranges.max = static_cast<float>(dd::kMaxStock);
            break;
        case kRegenerate:
        case kVary:
            p.hints = kParameterIsAutomatable | kParameterIsBoolean | kParameterIsInteger;
            p.name = index == kRegenerate ? "Regenerate" : "Vary";
            p.symbol = index == kRegenerate ? "regenerate" : "vary";
            p.ranges.def = 0.0f;
            p.ranges.min = 0.0f;
            p.ranges.max = 1.0f;
            break;
        case kStatus:
            p.hints = kParameterIsOutput | kParameterIsInteger;
            p.name = "Status";
            p.symbol = "status";
            p.ranges.def = 0.0f;
            p.ranges.min = 0.0f;
            p.ranges.max = 3.0f;
            p.enumValues.count = 4;
            p.enumValues.restrictedMode = true;
            p.enumValues.values = new ParameterEnumerationValue[4];
            for (uint32_t k = 0; k < 4; ++k) {
                p.enumValues.values[k].value = static_cast<float>(k);
                p.enumValues.values[k].label = dd::statusName(static_cast<dd::Status>(k));
            }
            break;
        case kStocked:
            p.hints = kParameterIsOutput | kParameterIsInteger;
            p.name = "Stocked sounds";
            p.symbol = "stocked";
            p.ranges.def = 0.0f;
            p.ranges.min = 0.0f;
            p.ranges.max = static_cast<float>(dd::kPads * dd::kMaxStock);
            break;
        default:
            break;
        }
    }

    void initState(uint32_t index, State& s) override {
        s.hints = kStateIsOnlyForDSP;
        switch (index) {
        case kHostKey: s.key = "host"; s.defaultValue = "127.0.0.1"; s.label = "Companion host"; break;
        case kPortKey: s.key = "port"; s.defaultValue = "9000"; s.label = "Companion OSC port"; break;
        case kNotesKey: s.key = "notes"; s.defaultValue = ""; s.label = "Notes to stock (e.g. 36 38 42 46, or 60=perc)"; break;
        case kPadsKey: s.key = "pads"; s.defaultValue = ""; s.label = "Pad sounds and recipes"; break;
        case kStatusKey: s.key = "status"; s.defaultValue = ""; s.label = "Status and stocked files (read only)"; break;
        default: break;
        }
    }

    float getParameterValue(uint32_t index) const override {
        switch (index) {
        case kBehaviour: return behaviour_;
        case kStock: return stock_;
        case kRegenerate: return regenerate_;
        case kVary: return vary_;
        case kStatus: return status_;
        case kStocked: return stocked_;
        default: return 0.0f;
        }
    }

    void setParameterValue(uint32_t index, float value) override {
        switch (index) {
        case kBehaviour: behaviour_ = value >= 0.5f ? 1.0f : 0.0f; break;
        case kStock:
            stock_ = value;
            if (companion_) companion_->setStockTarget(static_cast<int>(value + 0.5f));
            break;
        case kRegenerate: regenerate_ = value; break;
        case kVary: vary_ = value; break;
        default: break;
        }
    }

    String getState(const char* key) const override {
        if (std::strcmp(key, "host") == 0) return String(companion_ ? companion_->host().c_str() : "127.0.0.1");
        if (std::strcmp(key, "port") == 0) return String(companion_ ? companion_->port() : 9000);
        if (std::strcmp(key, "notes") == 0 && companion_) return String(dd::formatNotes(companion_->pads()).c_str());
        if (std::strcmp(key, "pads") == 0 && companion_) return String(companion_->padsState().c_str());
        if (std::strcmp(key, "status") == 0 && companion_) return String(companion_->stockState().c_str());
        return String();
    }

    void setState(const char* key, const char* value) override {
        if (!companion_) return;
        if (std::strcmp(key, "host") == 0) {
            if (value[0] != '\0') companion_->setEndpoint(value, companion_->port());
        } else if (std::strcmp(key, "port") == 0) {
            char* end = nullptr;
            const long port = std::strtol(value, &end, 10);
            if (value[0] != '\0' && *end == '\0' && port >= 1 && port <= 65535) {
                companion_->setEndpoint(companion_->host(), static_cast<int>(port));
            } else {
                d_stderr2("dd-companion plugin: port must be 1..65535, got '%s'; keeping %d", value, companion_->port());
            }
        } else if (std::strcmp(key, "notes") == 0) {
            setNotes(value);
        } else if (std::strcmp(key, "pads") == 0) {
            std::vector<dd::PadRecord> pads;
            std::string error;
            if (dd::decodePads(value, pads, error)) {
                companion_->restore(pads);
            } else {
                d_stderr2("dd-companion plugin: %s", error.c_str());
            }
        }
    }

    bool setNotes(const char* text) {
        std::vector<dd::PadSpec> pads;
        std::string error;
        if (!dd::parseNotes(text, pads, error)) {
            d_stderr2("dd-companion plugin: %s; keeping the notes it had", error.c_str());
            return false;
        }
        companion_->setPads(pads);
        return true;
    }

    void sampleRateChanged(double rate) override {
        if (companion_) companion_->pause();
        rack_.clear();
        rack_.setRate(rate);
        if (companion_) companion_->resume(rate);
    }

    void run(const float**, float** outputs, uint32_t frames, const MidiEvent* midi, uint32_t midiCount) override {
        uint32_t n = 0;
        for (uint32_t i = 0; i < midiCount && n < kMaxEvents; ++i) {
            if (midi[i].size > 3 || midi[i].size < 2) continue;
            events_[n].frame = midi[i].frame;
            events_[n].status = midi[i].data[0];
            events_[n].data1 = midi[i].data[1];
            events_[n].data2 = midi[i].size > 2 ? midi[i].data[2] : 0;
            ++n;
        }
        rack_.setBehaviour(behaviour_ >= 0.5f ? dd::Behaviour::Keep : dd::Behaviour::New);
        const bool regen = regenerate_ >= 0.5f, vary = vary_ >= 0.5f;
        if (regen && !lastRegenerate_) rack_.regenerateLast();
        if (vary && !lastVary_) rack_.varyLast();
        lastRegenerate_ = regen;
        lastVary_ = vary;
        rack_.process(events_, n, outputs[0], outputs[1], frames);
        if (companion_) companion_->processingStarted();  // an atomic store: no lock, no wait
        status_ = companion_ ? static_cast<float>(companion_->status()) : 0.0f;
        stocked_ = static_cast<float>(rack_.stockedTotal());
    }

private:
    dd::Rack rack_;
    std::unique_ptr<dd::Companion> companion_;  // destroyed first: it frees every sample
    dd::Event events_[kMaxEvents];
    float behaviour_ = 0.0f, stock_ = 2.0f, regenerate_ = 0.0f, vary_ = 0.0f, status_ = 0.0f, stocked_ = 0.0f;
    bool lastRegenerate_ = false, lastVary_ = false;

    DISTRHO_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR(DDPlugin)
};

Plugin* createPlugin() { return new DDPlugin(); }

END_NAMESPACE_DISTRHO

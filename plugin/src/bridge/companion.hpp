// The worker side of the plugin: talks OSC to the running companion (liblo), keeps every pad's stock
// filled, loads and resamples the files it names, and hands samples to the audio thread's Rack.
//
// Threads: liblo's server thread receives replies and queues them; one worker thread does everything
// else (requests, file reading, resampling, freeing). The host's main thread only sets and reads
// configuration and state under a mutex. Nothing here is ever called from the audio thread.
#pragma once

#include <lo/lo.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../core/rack.hpp"
#include "../core/recipe.hpp"

namespace dd {

enum class Status { Missing = 0, Stocking = 1, Ready = 2, Error = 3 };

class Companion {
public:
    Companion(Rack& rack, double hostRate);
    ~Companion();
    Companion(const Companion&) = delete;
    Companion& operator=(const Companion&) = delete;

    void setEndpoint(const std::string& host, int port);
    std::string host() const;
    int port() const;
    void setStockTarget(int perPad) noexcept { stockTarget_.store(perPad); }
    void setPads(const std::vector<PadSpec>& pads);  // the notes this instance stocks, and their categories
    std::vector<PadSpec> pads() const;
    // the host has started processing (its parameters are applied): only then are sounds requested, so a
    // plugin that is merely loaded (a host's scan, a disabled track) costs the companion nothing
    void processingStarted() noexcept { started_.store(true, std::memory_order_relaxed); }

    // host rate change: pause() before the rack is cleared, resume() after (audio stopped meanwhile)
    void pause();
    void resume(double hostRate);

    void restore(const std::vector<PadRecord>& pads);  // a saved state: play these sounds again
    std::string padsState() const;                     // the pads' current sounds, for the host to save
    std::string stockState() const;                    // status line, then note<TAB>file of every stocked sound
    Status status() const noexcept { return status_.load(); }
    std::string statusText() const;
    int replyPort() const noexcept { return replyPort_; }

private:
    struct Arg {
        char type = 0;
        int i = 0;
        float f = 0.0f;
        std::string s;
    };
    struct Reply {
        std::string path;
        std::vector<Arg> args;
        std::string from;
    };
    enum class Kind { Stock, Restore, Vary };
    struct Request {
        Kind kind = Kind::Stock;
        int pad = 0;
        std::string expectRecipe;  // Restore: the recipe the new file must match
        std::string category;      // Stock: the category asked for (a reply of another kind is not ours)
        std::chrono::steady_clock::time_point sent{};
    };
    using Clock = std::chrono::steady_clock;

    static int onMessage(const char* path, const char* types, lo_arg** argv, int argc, lo_message msg, void* self);
    static void onError(int num, const char* msg, const char* where);

    void run();
    void tick();
    void handleOutbox();
    void handleReply(const Reply& r);
    void connect();
    void disconnect(const char* why);
    void send(const char* path, lo_message msg);
    void sendNext();
    void finish(const Request& req, const std::vector<std::string>& paths);
    bool deliver(int pad, const std::string& path, ToAudio::Kind kind, std::string& error,
                 const std::string& category = "");
    void updateStatus();
    void unstock(size_t pad);
    void setText(const std::string& text);

    Rack& rack_;
    lo_server_thread server_ = nullptr;
    int replyPort_ = 0;

    mutable std::mutex mutex_;  // guards everything below up to the worker-only section
    std::condition_variable wake_;
    std::deque<Reply> replies_;
    std::string host_ = "127.0.0.1";
    std::string hostAddress_ = "127.0.0.1";
    int port_ = 9000;
    bool endpointChanged_ = true;
    bool endpointSet_ = false;
    std::vector<PadRecord> restoreQueue_;
    std::array<PadRecord, kPads> current_{};  // what each pad plays now (the saved state)
    std::array<std::deque<std::string>, kPads> stockPaths_{};  // the files in each pad's stock, oldest first
    std::string statusText_ = "starting";
    std::vector<PadSpec> pads_;  // the notes stocked, in the order they are served
    bool stop_ = false;
    bool restoreAsked_ = false;
    bool pauseAsked_ = false, paused_ = false;
    double hostRate_;
    std::condition_variable pausedCv_;

    std::atomic<int> stockTarget_{2};
    std::atomic<bool> started_{false};
    std::atomic<Status> status_{Status::Missing};

    // worker thread only
    lo_address target_ = nullptr;
    std::string targetHost_;
    std::string replyFrom_;           // the companion's numeric address: replies from elsewhere are dropped
    int targetPort_ = 0;
    bool connected_ = false;
    bool subscribed_ = false;
    Clock::time_point lastPing_{}, lastPong_{}, backoffUntil_{};
    int token_ = 0;
    bool awaiting_ = false;           // a request sent, its /dd/queued not back yet
    Request awaitingReq_{};
    std::map<int, Request> jobs_;     // job number -> request
    std::atomic<int> jobsShown_{0};     // jobs_.size() and pending_.size(), for the status line (any thread)
    std::atomic<int> pendingShown_{0};
    std::array<int, kPads> stocked_{};   // samples handed to the rack's stock and not taken out
    std::array<int, kPads> inFlight_{};  // stock requests not answered yet
    std::deque<Request> pending_;     // restores and variations waiting to be sent
    std::set<Sample*> live_;          // every sample allocated and not freed yet
    double rate_ = 48000.0;
    bool mismatch_ = false;           // a restored pad came back from another model
    std::thread worker_;
};

const char* statusName(Status s) noexcept;

}  // namespace dd

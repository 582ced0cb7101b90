#include "companion.hpp"

#include <netdb.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "loader.hpp"

namespace dd {

namespace {
constexpr auto kRetry = std::chrono::milliseconds(2000);   // ping / reconnect period
constexpr auto kSilence = std::chrono::milliseconds(5000); // no pong for this long: the companion is gone
constexpr auto kAckWait = std::chrono::milliseconds(3000); // a request's /dd/queued must come back by then
constexpr auto kJobWait = std::chrono::seconds(60);        // a job's /dd/done must come back by then (a lost
                                                           // reply blocks one of the two job slots no longer)
constexpr size_t kJobsInFlight = 2;                         // per instance, so several share the companion's queue

std::string numericHost(const std::string& host) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_DGRAM;
    addrinfo* found = nullptr;
    if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) return "";
    char name[NI_MAXHOST] = {0};
    const int rc = getnameinfo(found->ai_addr, found->ai_addrlen, name, sizeof(name), nullptr, 0, NI_NUMERICHOST);
    freeaddrinfo(found);
    return rc == 0 ? name : "";
}

std::string shortHash(const std::string& h) { return h.size() > 12 ? h.substr(0, 12) : h; }
}  // namespace

const char* statusName(Status s) noexcept {
    switch (s) {
    case Status::Missing: return "companion missing";
    case Status::Stocking: return "stocking";
    case Status::Ready: return "connected";
    case Status::Error: return "error";
    }
    return "?";
}

Companion::Companion(Rack& rack, double hostRate) : rack_(rack), hostRate_(hostRate), rate_(hostRate) {
    server_ = lo_server_thread_new(nullptr, &Companion::onError);  // any free port
    if (server_ != nullptr) {
        lo_server_thread_add_method(server_, nullptr, nullptr, &Companion::onMessage, this);
        replyPort_ = lo_server_thread_get_port(server_);
        lo_server_thread_start(server_);
    } else {
        statusText_ = "cannot open a UDP port for the companion's replies";
    }
    worker_ = std::thread([this] { run(); });
}

Companion::~Companion() {
    {
        std::lock_guard<std::mutex> lk(mutex_);
        stop_ = true;
        pauseAsked_ = false;
    }
    wake_.notify_all();
    if (worker_.joinable()) worker_.join();
    if (target_ != nullptr && server_ != nullptr) {  // leave the companion's subscription list as we found it
        lo_message m = lo_message_new();
        lo_message_add_int32(m, replyPort_);
        send("/dd/reply/unsubscribe", m);
    }
    if (server_ != nullptr) {
        lo_server_thread_stop(server_);
        lo_server_thread_free(server_);
    }
    if (target_ != nullptr) lo_address_free(target_);
    for (Sample* s : live_) delete s;  // the audio thread is gone: nothing plays them any more
}

void Companion::onError(int num, const char* msg, const char* where) {
    std::fprintf(stderr, "dd-companion plugin: OSC error %d: %s (%s)\n", num, msg ? msg : "", where ? where : "");
}

int Companion::onMessage(const char* path, const char* types, lo_arg** argv, int argc, lo_message msg, void* self) {
    auto* me = static_cast<Companion*>(self);
    Reply r;
    r.path = path ? path : "";
    for (int k = 0; k < argc; ++k) {
        Arg a;
        a.type = types[k];
        switch (types[k]) {
        case 'i': a.i = argv[k]->i; break;
        case 'h': a.i = static_cast<int>(argv[k]->h); a.type = 'i'; break;
        case 'f': a.f = argv[k]->f; break;
        case 'd': a.f = static_cast<float>(argv[k]->d); a.type = 'f'; break;
        case 's': case 'S': a.s = &argv[k]->s; a.type = 's'; break;
        default: break;
        }
        r.args.push_back(a);
    }
    lo_address src = lo_message_get_source(msg);
    const char* from = src ? lo_address_get_hostname(src) : nullptr;
    r.from = from ? from : "";
    {
        std::lock_guard<std::mutex> lk(me->mutex_);
        if (me->replies_.size() < 4096) me->replies_.push_back(std::move(r));
    }
    me->wake_.notify_all();
    return 0;
}

void Companion::setEndpoint(const std::string& host, int port) {
    const std::string numeric = numericHost(host);
    std::lock_guard<std::mutex> lk(mutex_);
    if (host == host_ && port == port_ && endpointSet_) return;
    endpointSet_ = true;
    host_ = host;
    port_ = port;
    hostAddress_ = numeric;
    endpointChanged_ = true;
    wake_.notify_all();
}

void Companion::setPads(const std::vector<PadSpec>& pads) {
    std::lock_guard<std::mutex> lk(mutex_);
    pads_ = pads;
}

std::vector<PadSpec> Companion::pads() const {
    std::lock_guard<std::mutex> lk(mutex_);
    return pads_;
}

std::string Companion::host() const {
    std::lock_guard<std::mutex> lk(mutex_);
    return host_;
}

int Companion::port() const {
    std::lock_guard<std::mutex> lk(mutex_);
    return port_;
}

void Companion::pause() {
    std::unique_lock<std::mutex> lk(mutex_);
    pauseAsked_ = true;
    wake_.notify_all();
    pausedCv_.wait(lk, [this] { return paused_ || stop_; });
}

void Companion::resume(double hostRate) {
    {
        std::lock_guard<std::mutex> lk(mutex_);
        hostRate_ = hostRate;
        pauseAsked_ = false;
    }
    wake_.notify_all();
}

void Companion::restore(const std::vector<PadRecord>& pads) {
    std::lock_guard<std::mutex> lk(mutex_);
    restoreQueue_ = pads;
    for (PadRecord& p : current_) p = PadRecord{};
    for (const PadRecord& p : pads) current_[static_cast<size_t>(p.note)] = p;
    restoreAsked_ = true;
    wake_.notify_all();
}

std::string Companion::padsState() const {
    std::lock_guard<std::mutex> lk(mutex_);
    std::vector<PadRecord> pads;
    for (const PadRecord& p : current_) {
        if (p.note >= 0 && !p.path.empty()) pads.push_back(p);
    }
    return encodePads(pads);
}

std::string Companion::stockState() const {
    std::lock_guard<std::mutex> lk(mutex_);
    std::string out = std::string(statusName(status_.load())) + ": " + statusText_ + " [jobs " +
                      std::to_string(jobsShown_.load()) + ", waiting " + std::to_string(pendingShown_.load()) + "]\n";
    for (size_t pad = 0; pad < stockPaths_.size(); ++pad) {
        for (const std::string& path : stockPaths_[pad]) out += std::to_string(pad) + "\t" + path + "\n";
    }
    return out;
}

std::string Companion::statusText() const {
    std::lock_guard<std::mutex> lk(mutex_);
    return std::string(statusName(status_.load())) + ": " + statusText_ + " [jobs " +
           std::to_string(jobsShown_.load()) + ", waiting " + std::to_string(pendingShown_.load()) + "]";
}

void Companion::setText(const std::string& text) {
    std::lock_guard<std::mutex> lk(mutex_);
    statusText_ = text;
}

// ------------------------------------------------------------------------------------------- worker

void Companion::run() {
    for (;;) {
        std::deque<Reply> replies;
        std::vector<PadRecord> restores;
        bool changed = false;
        bool reloadAll = false;
        {
            std::unique_lock<std::mutex> lk(mutex_);
            wake_.wait_for(lk, std::chrono::milliseconds(5), [this] { return stop_ || pauseAsked_ || !replies_.empty(); });
            if (stop_) return;
            if (pauseAsked_) {
                paused_ = true;
                pausedCv_.notify_all();
                wake_.wait(lk, [this] { return stop_ || !pauseAsked_; });
                paused_ = false;
                if (stop_) return;
                reloadAll = true;
                rate_ = hostRate_;
            }
            replies.swap(replies_);
            restores.swap(restoreQueue_);
            if (restoreAsked_) mismatch_ = false;
            restoreAsked_ = false;
            changed = endpointChanged_;
            endpointChanged_ = false;
            if (changed) replyFrom_ = hostAddress_;
        }
        handleOutbox();
        if (reloadAll) {  // the rack was cleared: load every pad's current sound again at the new rate
            std::vector<PadRecord> again;
            {
                std::lock_guard<std::mutex> lk(mutex_);
                for (const PadRecord& p : current_) {
                    if (p.note >= 0 && !p.path.empty()) again.push_back(p);
                }
            }
            for (const PadRecord& p : again) {
                std::string error;
                deliver(p.note, p.path, ToAudio::Reload, error);
            }
        }
        if (changed) connect();
        for (const PadRecord& rec : restores) {
            std::string error;
            if (fileExists(rec.path) && deliver(rec.note, rec.path, ToAudio::Current, error)) continue;
            const std::string category = jsonField(rec.recipe, "category");
            const std::string seed = jsonField(rec.recipe, "seed");
            if (category.empty() || seed.empty()) {
                setText("pad " + std::to_string(rec.note) + ": " + rec.path + " is missing and its recipe has no category and seed");
                continue;
            }
            Request req;
            req.kind = Kind::Restore;
            req.pad = rec.note;
            req.expectRecipe = rec.recipe;
            pending_.push_back(req);
        }
        for (const Reply& r : replies) handleReply(r);
        handleOutbox();
        tick();
    }
}

void Companion::handleOutbox() {
    ToWorker msg;
    while (rack_.outbox.pop(msg)) {
        const size_t pad = msg.pad & 0x7F;
        switch (msg.kind) {
        case ToWorker::Played:
            if (msg.fromStock) unstock(pad);
            if (msg.sample != nullptr) {
                std::lock_guard<std::mutex> lk(mutex_);
                current_[pad] = PadRecord{static_cast<int>(pad), msg.sample->path, msg.sample->recipe};
            }
            break;
        case ToWorker::Release:
            if (msg.fromStock) unstock(pad);
            if (msg.sample != nullptr) {
                live_.erase(msg.sample);
                delete msg.sample;
            }
            break;
        case ToWorker::Regenerate:
            setText("pad " + std::to_string(pad) + ": regenerating");
            break;
        case ToWorker::Vary: {
            Request req;
            req.kind = Kind::Vary;
            req.pad = static_cast<int>(pad);
            pending_.push_back(req);
            break;
        }
        case ToWorker::Nothing:
            break;
        }
    }
}

void Companion::unstock(size_t pad) {
    if (stocked_[pad] > 0) --stocked_[pad];
    std::lock_guard<std::mutex> lk(mutex_);
    if (!stockPaths_[pad].empty()) stockPaths_[pad].pop_front();
}

void Companion::connect() {
    std::string host;
    int port = 0;
    {
        std::lock_guard<std::mutex> lk(mutex_);
        host = host_;
        port = port_;
    }
    if (target_ != nullptr) {
        if (subscribed_) {
            lo_message m = lo_message_new();
            lo_message_add_int32(m, replyPort_);
            send("/dd/reply/unsubscribe", m);
        }
        lo_address_free(target_);
    }
    target_ = lo_address_new(host.c_str(), std::to_string(port).c_str());
    targetHost_ = host;
    targetPort_ = port;
    disconnect("connecting");
    lastPing_ = Clock::time_point{};
}

void Companion::disconnect(const char* why) {
    connected_ = false;
    subscribed_ = false;
    if (awaiting_ && awaitingReq_.kind != Kind::Stock) pending_.push_front(awaitingReq_);
    awaiting_ = false;
    for (const auto& job : jobs_) {  // restores and variations are asked again once the companion answers
        if (job.second.kind != Kind::Stock) pending_.push_back(job.second);
    }
    jobs_.clear();  // their answers, if any, are no longer expected
    inFlight_.fill(0);
    // restores and variations stay pending: they are sent again once the companion answers
    setText(why);
}

void Companion::send(const char* path, lo_message msg) {
    if (target_ != nullptr && server_ != nullptr) lo_send_message_from(target_, lo_server_thread_get_server(server_), path, msg);
    lo_message_free(msg);
}

void Companion::tick() {
    if (target_ == nullptr || server_ == nullptr) {
        updateStatus();
        return;
    }
    const auto now = Clock::now();
    if (now - lastPing_ >= kRetry) {
        if (!subscribed_) {
            lo_message m = lo_message_new();
            lo_message_add_int32(m, replyPort_);
            send("/dd/reply/subscribe", m);
        }
        lo_message m = lo_message_new();
        lo_message_add_int32(m, ++token_);
        send("/dd/ping", m);
        lastPing_ = now;
    }
    if (connected_ && now - lastPong_ > kSilence) {
        disconnect(("no answer from the companion at " + targetHost_ + ":" + std::to_string(targetPort_) + "; retrying every 2 s").c_str());
    }
    if (awaiting_ && now - awaitingReq_.sent > kAckWait) {
        awaiting_ = false;
        if (awaitingReq_.kind == Kind::Stock) {
            if (inFlight_[static_cast<size_t>(awaitingReq_.pad)] > 0) --inFlight_[static_cast<size_t>(awaitingReq_.pad)];
        } else {
            pending_.push_front(awaitingReq_);
        }
    }
    for (auto it = jobs_.begin(); it != jobs_.end();) {
        if (now - it->second.sent > kJobWait) {
            if (it->second.kind == Kind::Stock && inFlight_[static_cast<size_t>(it->second.pad)] > 0) --inFlight_[static_cast<size_t>(it->second.pad)];
            it = jobs_.erase(it);
        } else {
            ++it;
        }
    }
    if (connected_ && !awaiting_ && now >= backoffUntil_ && started_.load(std::memory_order_relaxed)) sendNext();
    updateStatus();
}

void Companion::sendNext() {
    if (jobs_.size() >= kJobsInFlight) return;
    Request req;
    lo_message m = nullptr;
    const char* address = "/dd/generate";
    while (!pending_.empty() && m == nullptr) {
        req = pending_.front();
        pending_.pop_front();
        if (req.kind == Kind::Restore) {
            const std::string category = jsonField(req.expectRecipe, "category");
            const long seed = std::strtol(jsonField(req.expectRecipe, "seed").c_str(), nullptr, 10);
            m = lo_message_new();
            lo_message_add_string(m, category.c_str());
            lo_message_add_int32(m, 1);
            lo_message_add_int32(m, static_cast<int32_t>(seed));
            setText("pad " + std::to_string(req.pad) + ": its file is missing, regenerating it from its recipe (seed " + std::to_string(seed) + ")");
        } else {
            std::string path;
            {
                std::lock_guard<std::mutex> lk(mutex_);
                path = current_[static_cast<size_t>(req.pad)].path;
            }
            if (path.empty()) continue;
            m = lo_message_new();
            lo_message_add_string(m, path.c_str());
            address = "/dd/variation";
        }
    }
    if (m == nullptr) {
        const int target = std::min(stockTarget_.load(), kMaxStock);
        int best = -1, bestLevel = target;
        std::string category;
        for (const PadSpec& spec : pads()) {
            const int level = stocked_[static_cast<size_t>(spec.note)] + inFlight_[static_cast<size_t>(spec.note)];
            if (level < bestLevel) {
                best = spec.note;
                bestLevel = level;
                category = spec.category;
            }
        }
        if (best < 0) return;
        req = Request{};
        req.kind = Kind::Stock;
        req.pad = best;
        req.category = category;
        ++inFlight_[static_cast<size_t>(best)];
        m = lo_message_new();
        lo_message_add_string(m, category.c_str());
        lo_message_add_int32(m, 1);
    }
    req.sent = Clock::now();
    awaitingReq_ = req;
    awaiting_ = true;
    send(address, m);
}

void Companion::handleReply(const Reply& r) {
    if (!replyFrom_.empty() && !r.from.empty() && r.from != replyFrom_) return;  // only the companion talks to us
    const auto now = Clock::now();
    const auto intArg = [&r](size_t k) { return k < r.args.size() ? (r.args[k].type == 'i' ? r.args[k].i : static_cast<int>(r.args[k].f)) : -1; };
    const auto strArg = [&r](size_t k) { return k < r.args.size() && r.args[k].type == 's' ? r.args[k].s : std::string(); };
    if (r.path == "/dd/pong" || r.path == "/dd/subscribed") {
        if (!connected_) setText("connected to " + targetHost_ + ":" + std::to_string(targetPort_));
        connected_ = true;
        lastPong_ = now;
        if (r.path == "/dd/subscribed") subscribed_ = true;
        return;
    }
    if (r.path == "/dd/queued") {
        if (awaiting_) {
            jobs_[intArg(0)] = awaitingReq_;
            awaiting_ = false;
        }
        return;
    }
    if (r.path == "/dd/error") {
        const int job = intArg(0);
        const std::string code = strArg(1), message = strArg(2);
        Request req;
        bool ours = false;
        if (job == -1 && awaiting_) {
            req = awaitingReq_;
            awaiting_ = false;
            ours = true;
        } else if (jobs_.count(job) != 0) {
            req = jobs_[job];
            jobs_.erase(job);
            ours = true;
        }
        if (!ours) {
            if (job == -1) setText("companion: " + message);
            return;
        }
        if (req.kind == Kind::Stock) {
            if (inFlight_[static_cast<size_t>(req.pad)] > 0) --inFlight_[static_cast<size_t>(req.pad)];
        } else if (code == "busy") {
            pending_.push_back(req);
        }
        if (code == "busy") backoffUntil_ = now + std::chrono::milliseconds(1000);
        if (code == "not_found" || code == "bad_config") backoffUntil_ = now + kRetry;  // e.g. a category the model lacks
        setText("pad " + std::to_string(req.pad) + ": " + code + ": " + message);
        return;
    }
    if (r.path == "/dd/done") {
        const int job = intArg(0);
        auto it = jobs_.find(job);
        if (it == jobs_.end()) return;  // someone else's (a broadcast of a pad hit or the window)
        const Request req = it->second;
        jobs_.erase(it);
        std::vector<std::string> paths;
        for (size_t k = 1; k < r.args.size(); ++k) paths.push_back(strArg(k));
        finish(req, paths);
    }
}

void Companion::finish(const Request& req, const std::vector<std::string>& paths) {
    const size_t pad = static_cast<size_t>(req.pad);
    if (req.kind == Kind::Stock && inFlight_[pad] > 0) --inFlight_[pad];
    if (paths.empty() || paths[0].empty()) return;
    std::string error;
    const ToAudio::Kind kind = req.kind == Kind::Stock ? ToAudio::Stock : ToAudio::Current;
    if (!deliver(req.pad, paths[0], kind, error, req.category)) {
        setText("pad " + std::to_string(req.pad) + ": " + error);
        return;
    }
    if (req.kind == Kind::Restore) {
        std::string recipe;
        {
            std::lock_guard<std::mutex> lk(mutex_);
            recipe = current_[pad].recipe;
        }
        const std::string want = jsonField(req.expectRecipe, "model_hash"), got = jsonField(recipe, "model_hash");
        if (!want.empty() && want != got) {
            setText("pad " + std::to_string(req.pad) + ": the model of its recipe (" + shortHash(want) +
                    ") is not the companion's loaded model (" + shortHash(got) + "): regenerated with the loaded one, it sounds different");
            mismatch_ = true;
        } else {
            setText("pad " + std::to_string(req.pad) + ": regenerated from its recipe");
        }
    }
}

bool Companion::deliver(int pad, const std::string& path, ToAudio::Kind kind, std::string& error,
                        const std::string& category) {
    auto* s = new Sample();
    if (!loadSample(path, rate_, *s, error)) {
        delete s;
        return false;
    }
    if (!category.empty() && jsonField(s->recipe, "category") != category) {
        // a broadcast /dd/queued of another client's job was taken for ours: not this pad's sound
        error = path + " is a " + jsonField(s->recipe, "category") + ", not the " + category + " asked for";
        delete s;
        return false;
    }
    s->pad = pad;
    if (!rack_.inbox.push(ToAudio{kind, static_cast<uint8_t>(pad), s})) {
        delete s;
        error = "the audio thread's inbox is full";
        return false;
    }
    live_.insert(s);
    if (kind == ToAudio::Stock) {
        ++stocked_[static_cast<size_t>(pad)];
        std::lock_guard<std::mutex> lk(mutex_);
        stockPaths_[static_cast<size_t>(pad)].push_back(path);
    }
    if (kind == ToAudio::Current || kind == ToAudio::Reload) {
        std::lock_guard<std::mutex> lk(mutex_);
        current_[static_cast<size_t>(pad)] = PadRecord{pad, path, s->recipe};
    }
    return true;
}

void Companion::updateStatus() {
    jobsShown_.store(static_cast<int>(jobs_.size()));
    pendingShown_.store(static_cast<int>(pending_.size()));
    if (!connected_) {
        status_.store(Status::Missing);
        return;
    }
    if (mismatch_) {  // a restored pad sounds different: said until the next state is restored
        status_.store(Status::Error);
        return;
    }
    const int target = std::min(stockTarget_.load(), kMaxStock);
    bool full = pending_.empty() && !awaiting_;
    for (const PadSpec& spec : pads()) full = full && stocked_[static_cast<size_t>(spec.note)] >= target;
    status_.store(full ? Status::Ready : Status::Stocking);
}

}  // namespace dd

// A bounded single-producer single-consumer queue of small trivially copyable items.
// One thread pushes, one other thread pops; neither ever blocks, locks or allocates after
// construction. The storage is allocated once, by the constructor (outside the audio thread).
#pragma once

#include <atomic>
#include <cstddef>
#include <type_traits>
#include <vector>

namespace dd {

template <typename T>
class SpscQueue {
    static_assert(std::is_trivially_copyable<T>::value, "SpscQueue holds trivially copyable items");

public:
    // capacity is rounded up to a power of two; one slot stays free to tell full from empty
    explicit SpscQueue(size_t capacity) {
        size_t size = 2;
        while (size < capacity + 1) size <<= 1;
        slots_.resize(size);
        mask_ = size - 1;
    }

    SpscQueue(const SpscQueue&) = delete;
    SpscQueue& operator=(const SpscQueue&) = delete;

    // producer side: false (nothing written) when the queue is full
    bool push(const T& item) noexcept {
        const size_t head = head_.load(std::memory_order_relaxed);
        const size_t next = (head + 1) & mask_;
        if (next == tail_.load(std::memory_order_acquire)) return false;
        slots_[head] = item;
        head_.store(next, std::memory_order_release);
        return true;
    }

    // consumer side: false when the queue is empty
    bool pop(T& item) noexcept {
        const size_t tail = tail_.load(std::memory_order_relaxed);
        if (tail == head_.load(std::memory_order_acquire)) return false;
        item = slots_[tail];
        tail_.store((tail + 1) & mask_, std::memory_order_release);
        return true;
    }

    size_t capacity() const noexcept { return mask_; }

private:
    std::vector<T> slots_;
    size_t mask_ = 0;
    alignas(64) std::atomic<size_t> head_{0};
    alignas(64) std::atomic<size_t> tail_{0};
};

}  // namespace dd

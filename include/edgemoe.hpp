// edgemoe.hpp: a small header-only C++17 RAII wrapper over the edgemoe C API.
#ifndef EDGEMOE_HPP
#define EDGEMOE_HPP

#include <algorithm>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "edgemoe.h"

namespace edgemoe {

/// Thrown for any status other than EMOE_STATUS_OK.
class Error : public std::runtime_error {
public:
    Error(emoe_status status, const std::string &message)
        : std::runtime_error(std::string(emoe_status_string(status)) + ": " + message), status_(status) {}
    emoe_status status() const noexcept { return status_; }

private:
    emoe_status status_;
};

/// A loaded model; a copyable handle (shared ownership), usable from many threads.
class Model {
public:
    explicit Model(const std::string &path, const emoe_model_params *params = nullptr) {
        char error[512] = {0};
        emoe_model *raw = nullptr;
        emoe_status st = emoe_model_load(path.c_str(), params, &raw, error, sizeof error);
        if (st != EMOE_STATUS_OK) throw Error(st, error);
        handle_.reset(raw, emoe_model_free);
    }

    const emoe_model *get() const noexcept { return handle_.get(); }

    emoe_model_info info() const {
        emoe_model_info out{};
        out.struct_size = sizeof out;
        check(emoe_model_get_info(get(), &out));
        return out;
    }

    std::vector<int32_t> tokenize(std::string_view text, bool add_bos = true) const {
        size_t n = 0;
        std::vector<int32_t> ids(text.size() + 8);
        emoe_status st = emoe_tokenize(get(), text.data(), text.size(), add_bos, ids.data(), ids.size(), &n);
        if (st == EMOE_STATUS_BUFFER_TOO_SMALL) {
            ids.resize(n);
            st = emoe_tokenize(get(), text.data(), text.size(), add_bos, ids.data(), ids.size(), &n);
        }
        check(st);
        ids.resize(n);
        return ids;
    }

private:
    void check(emoe_status st) const {
        if (st != EMOE_STATUS_OK) throw Error(st, last_error(get()));
    }

public:
    /// The model's last error, copied under the library's lock (safe while other threads use
    /// the model).
    static std::string last_error(const emoe_model *model) {
        char buf[512] = {0};
        size_t len = 0;
        if (emoe_model_last_error_copy(model, buf, sizeof buf, &len) != EMOE_STATUS_OK) return {};
        if (len < sizeof buf) return std::string(buf, len);
        std::string full(len + 1, '\0');
        emoe_model_last_error_copy(model, full.data(), full.size(), &len);
        full.resize(std::min(len, full.size() - 1));
        return full;
    }

private:
    std::shared_ptr<emoe_model> handle_;
};

/// One conversation. Move-only; one caller at a time; cancel() from any thread.
class Session {
public:
    explicit Session(const Model &model, uint32_t context_length = 0) : model_(model) {
        emoe_session *raw = nullptr;
        emoe_status st = emoe_session_new(model.get(), context_length, &raw);
        if (st != EMOE_STATUS_OK) throw Error(st, Model::last_error(model.get()));
        handle_.reset(raw);
    }

    /// Streams the continuation of `prompt` to `on_piece`; return false from it to stop. An
    /// exception thrown by `on_piece` stops the generation and is rethrown here once the C call
    /// has returned (it never crosses the C library).
    emoe_generate_stats generate(std::string_view prompt, const std::function<bool(std::string_view)> &on_piece,
                                 const emoe_generate_params *params = nullptr) {
        emoe_generate_stats stats{};
        stats.struct_size = sizeof stats;
        struct Call {
            const std::function<bool(std::string_view)> *on_piece;
            std::exception_ptr error;
        } call{&on_piece, nullptr};
        auto trampoline = [](void *user, const char *piece, size_t len) -> bool {
            auto *c = static_cast<Call *>(user);
            try {
                return (*c->on_piece)(std::string_view(piece, len));
            } catch (...) {
                c->error = std::current_exception();  // rethrown after the C call returns
                return false;
            }
        };
        emoe_status st = emoe_session_generate(handle_.get(), prompt.data(), prompt.size(), params, trampoline,
                                               &call, &stats);
        if (call.error) std::rethrow_exception(call.error);
        check(st);
        return stats;
    }

    void reset() { check(emoe_session_reset(handle_.get())); }
    /// Drops the tokens after `position` (undo, regenerate, edit).
    void truncate(size_t position) { check(emoe_session_truncate(handle_.get(), position)); }
    /// The tokens in the session's KV cache, in order.
    std::vector<int32_t> tokens() {
        size_t n = 0;
        emoe_status st = emoe_session_tokens(handle_.get(), nullptr, 0, &n);
        std::vector<int32_t> ids(n);
        if (n > 0 || st != EMOE_STATUS_OK)
            check(emoe_session_tokens(handle_.get(), ids.data(), ids.size(), &n));
        return ids;
    }
    void cancel() noexcept { emoe_session_cancel(handle_.get()); }

private:
    struct Free {
        void operator()(emoe_session *s) const noexcept { emoe_session_free(s); }
    };
    void check(emoe_status st) const {
        if (st != EMOE_STATUS_OK) throw Error(st, emoe_session_last_error(handle_.get()));
    }
    Model model_;  // keeps the model alive
    std::unique_ptr<emoe_session, Free> handle_;
};

}  // namespace edgemoe

#endif  // EDGEMOE_HPP

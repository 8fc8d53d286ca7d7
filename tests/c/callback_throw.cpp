// An exception thrown by a piece callback reaches the caller of edgemoe::Session::generate
// once the C call has returned, and the session stays usable.   callback_throw MODEL.gguf
#include <cstdio>
#include <stdexcept>
#include <string>

#include "edgemoe.hpp"

struct Stop : std::runtime_error {
    Stop() : std::runtime_error("stop from the callback") {}
};

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    edgemoe::Model model(argv[1]);
    edgemoe::Session session(model, 256);
    emoe_generate_params gp;
    emoe_generate_params_default(&gp);
    gp.max_tokens = 32;
    int pieces = 0;
    bool caught = false;
    try {
        session.generate("ROMEO:", [&](std::string_view) -> bool {
            if (++pieces == 2) throw Stop();
            return true;
        }, &gp);
    } catch (const Stop &) {
        caught = true;
    }
    if (!caught || pieces != 2) {
        std::fprintf(stderr, "callback_throw: the exception was %s after %d pieces\n",
                     caught ? "caught" : "lost", pieces);
        return 1;
    }
    std::string text;
    session.reset();
    session.generate("ROMEO:", [&](std::string_view p) {
        text += p;
        return true;
    }, &gp);
    if (text.empty()) {
        std::fprintf(stderr, "callback_throw: the session is not usable after the exception\n");
        return 1;
    }
    std::printf("callback exceptions: rethrown after the call\n");
    return 0;
}

// Interactive turns on stdin through the C++ wrapper: each line continues the conversation.
//   chat MODEL.gguf [MAX_TOKENS]
#include <iostream>
#include <string>

#include "edgemoe.hpp"

int main(int argc, char **argv) {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " MODEL.gguf [MAX_TOKENS]\n";
        return 2;
    }
    try {
        edgemoe::Model model(argv[1]);
        edgemoe::Session session(model);
        emoe_generate_params params;
        emoe_generate_params_default(&params);
        params.max_tokens = argc > 2 ? static_cast<uint32_t>(std::stoi(argv[2])) : 48;
        params.add_bos = true;
        std::string line;
        std::cout << "> " << std::flush;
        while (std::getline(std::cin, line)) {
            if (line.empty()) continue;
            auto stats = session.generate(line + "\n", [](std::string_view piece) {
                std::cout << piece << std::flush;
                return true;
            }, &params);
            params.add_bos = false;  // later turns continue the same context
            std::cout << "\n[" << stats.generated_tokens << " tokens]\n> " << std::flush;
        }
        std::cout << "\n";
    } catch (const edgemoe::Error &e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}

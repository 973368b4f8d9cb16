/// @brief The subcommands of the firetrain binary (each parses its own options).
#pragma once

namespace ft::cli {

void print_version();
int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_predict(int argc, char** argv);
int cmd_export(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_compress(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_sweep(int argc, char** argv);
int cmd_bench(int argc, char** argv);

}  // namespace ft::cli

fn main() {
    std::process::exit(sigil::cli::main());
}

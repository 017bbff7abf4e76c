fn main() {
    std::process::exit(lab_cli::run());
}

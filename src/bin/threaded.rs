fn main() {
    eprintln!("threaded: not built yet");
    std::process::exit(1);
}

fn main() {
    eprintln!("reactor: not built yet");
    std::process::exit(1);
}

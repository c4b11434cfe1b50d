fn main() {
    println!("nps-stream {}", env!("CARGO_PKG_VERSION"));
}

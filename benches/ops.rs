//! The benchmark suite (`cargo bench --bench ops [-- --filter NAME]`), the same cases as
//! `cads bench`: one JSON line per case on stdout. See src/bench/mod.rs.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; accept `--filter NAME` or a bare NAME.
    let mut filter = None;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--filter" => {
                filter = args.get(i + 1).cloned();
                i += 1;
            }
            a if !a.starts_with("--") => filter = Some(a.to_string()),
            _ => {}
        }
        i += 1;
    }
    let result = cads::Gpu::new().and_then(|gpu| {
        cads::bench::run_suite(&gpu, filter.as_deref(), |r| println!("{}", r.to_json()))
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

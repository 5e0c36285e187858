//! `CADS_TUNE_CACHE` moves the tuning cache: a `cads bench` run that has to choose a matmul tile
//! writes its choice into that folder (the tests point every context and every `cads` they start
//! at their own folder this way, tests/common/mod.rs, so the user's cache never holds a choice
//! measured beside other tests).

#[test]
fn cads_tune_cache_names_the_folder_the_choice_is_written_to() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tune-cache-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cads"))
        .args(["bench", "--filter", "matmul/tokens_2x1152x64_by_64x64"])
        .env(cads::gpu::TUNE_CACHE_ENV, &dir)
        .env_remove("CADS_KERNEL_MATMUL")
        .env_remove("CADS_TUNE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cads bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no cache folder {dir:?}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one file per adapter: {files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("\"matmul\""), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

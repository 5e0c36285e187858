//! Without an adapter, GPU tests and the CLI must FAIL and say how to get one — never skip.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// Vulkan only, and no driver manifest: both of the loader's variables (a newer loader prefers
/// `VK_DRIVER_FILES` over the older `VK_ICD_FILENAMES`, and a caller may have set either, as
/// `scripts/newer-lavapipe.sh`'s env.sh does) and no added ones.
const NO_GPU_ENV: [(&str, &str); 4] = [
    ("WGPU_BACKEND", "vulkan"),
    ("VK_ICD_FILENAMES", "/nonexistent"),
    ("VK_DRIVER_FILES", "/nonexistent"),
    ("VK_ADD_DRIVER_FILES", ""),
];

/// A GPU test. Run normally it passes; the test below re-runs it with no adapter.
#[test]
fn gpu_probe() {
    let gpu = common::gpu();
    assert!(!gpu.adapter().name.is_empty());
}

/// This test binary, however it was started. Run through an explicit dynamic loader (the runner
/// of `scripts/newer-lavapipe.sh` execs `ld-linux-x86-64.so.2 --library-path … BINARY`),
/// `current_exe()` is the loader, while the loader passes BINARY on as `argv[0]`. So take
/// `argv[0]` when it names an existing file other than `current_exe()`; re-running it directly
/// is what we want here (the system's loader, no driver at all).
fn test_executable() -> PathBuf {
    let current = std::env::current_exe().expect("current_exe");
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    let canonical = |p: &PathBuf| std::fs::canonicalize(p).ok();
    match argv0 {
        Some(a) if a.is_file() && canonical(&a) != canonical(&current) => a,
        _ => current,
    }
}

#[test]
fn gpu_tests_fail_with_install_instructions_when_no_adapter() {
    let out = Command::new(test_executable())
        .args(["gpu_probe", "--exact", "--nocapture", "--test-threads=1"])
        .envs(NO_GPU_ENV)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "probe passed without an adapter:\n{text}"
    );
    assert!(
        text.contains("mesa-vulkan-drivers") && text.contains("1 failed"),
        "no install hint:\n{text}"
    );
}

#[test]
fn cli_fails_with_install_instructions_when_no_adapter() {
    let out = common::cads_command()
        .arg("info")
        .envs(NO_GPU_ENV)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no GPU adapter") && err.contains("mesa-vulkan-drivers"),
        "{err}"
    );
}

/// A backend list with no name wgpu knows (wgpu's parser drops unknown names) is said to be
/// one, with the value, instead of reading as "no adapter found".
#[test]
fn an_unknown_backend_name_is_named_in_the_error() {
    let out = common::cads_command()
        .arg("info")
        .env("WGPU_BACKEND", "glx")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("'glx'") && err.contains("none of vulkan, metal, dx12, gl"),
        "{err}"
    );
}

/// GL alone with no EGL driver (glvnd's vendor list pointed at nothing): the error says what
/// wgpu's GL backend loads and how to install it, not the Vulkan instructions.
#[test]
fn gl_without_an_egl_driver_fails_with_egl_instructions() {
    let out = common::cads_command()
        .args(["info", "--backend", "gl"])
        .env("__EGL_VENDOR_LIBRARY_FILENAMES", "/nonexistent.json")
        .env("__EGL_VENDOR_LIBRARY_DIRS", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a GL adapter without EGL drivers:\n{err}"
    );
    assert!(
        err.contains("no GPU adapter") && err.contains("libegl-mesa0"),
        "{err}"
    );
}

//! Compiles `cuda/*.cu` to fatbins with nvcc when the `cuda` feature is on; does nothing
//! otherwise (the CPU build needs no CUDA toolkit).
//!
//! Targets come from `CUDA_COMPUTE_CAP` (what candle's own build uses):
//! * unset: SASS for sm_80 and sm_90 plus compute_80 PTX (the driver JITs it for newer GPUs);
//! * `90` (Hopper): sm_90a SASS plus compute_90 PTX;
//! * any other `NN` (or a comma list such as `80,90`): sm_NN SASS for each plus PTX of the last.
//!
//! The PTX embedded in the fatbin comes from the nvcc that runs here, so it must not be newer
//! than the driver of the machine that runs the binary (see `/work/shared/cuda/README.md`:
//! nvcc 13.0 for a 580 driver).

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCES: &[&str] = &["cache", "attention", "norm", "lora", "sampling"];
const HEADERS: &[&str] = &["common.cuh"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CUDA");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    if let Err(e) = build() {
        // A build script reports failure by panicking; the message says what to fix.
        panic!("lantern-kernels build.rs: {e}");
    }
}

fn gencode_flags() -> Result<Vec<String>, String> {
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let caps: Vec<u32> = match std::env::var("CUDA_COMPUTE_CAP") {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|c| {
                c.trim()
                    .trim_start_matches("sm_")
                    .trim_end_matches('a')
                    .parse::<u32>()
                    .map_err(|_| format!("CUDA_COMPUTE_CAP={v:?}: expected e.g. 90 or 80,90"))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Ok(vec![
                "-gencode=arch=compute_80,code=sm_80".into(),
                "-gencode=arch=compute_90,code=sm_90".into(),
                "-gencode=arch=compute_80,code=compute_80".into(),
            ])
        }
    };
    if let Some(c) = caps.iter().find(|&&c| c < 80) {
        return Err(format!(
            "CUDA_COMPUTE_CAP {c} is below 80: the kernels need sm_80 or newer (bf16)"
        ));
    }
    let mut flags = Vec::new();
    for &c in &caps {
        // Hopper: the arch-specific sm_90a target (wgmma/setmaxnreg available).
        let arch = if c == 90 {
            "90a".to_string()
        } else {
            c.to_string()
        };
        flags.push(format!("-gencode=arch=compute_{arch},code=sm_{arch}"));
    }
    if let Some(&last) = caps.last() {
        flags.push(format!("-gencode=arch=compute_{last},code=compute_{last}"));
    }
    Ok(flags)
}

fn nvcc() -> PathBuf {
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    if let Some(p) = std::env::var_os("NVCC") {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        let p = Path::new(&home).join("bin").join("nvcc");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("nvcc")
}

fn build() -> Result<(), String> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let src_dir = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").map_err(|e| format!("CARGO_MANIFEST_DIR: {e}"))?,
    )
    .join("cuda");
    for h in HEADERS {
        println!("cargo:rerun-if-changed={}", src_dir.join(h).display());
    }
    let gencode = gencode_flags()?;
    let nvcc = nvcc();
    // Registers, spills, stack and shared memory of every kernel (ptxas's report), one file for
    // all sources: `$OUT_DIR/resource-usage.txt` (scripts/ci-cuda.sh checks it for spills).
    let mut report = String::new();
    for name in SOURCES {
        let src = src_dir.join(format!("{name}.cu"));
        println!("cargo:rerun-if-changed={}", src.display());
        let out = out_dir.join(format!("{name}.fatbin"));
        let output = Command::new(&nvcc)
            .arg("--fatbin")
            .args(&gencode)
            .args(["-O3", "-std=c++17", "--expt-relaxed-constexpr", "--resource-usage"])
            .arg("-I")
            .arg(&src_dir)
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .output()
            .map_err(|e| {
                format!(
                    "could not run {} ({e}); install the CUDA toolkit, put nvcc on PATH or set NVCC / CUDA_HOME",
                    nvcc.display()
                )
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!(
                "nvcc failed on {} ({}):\n{stdout}{stderr}",
                src.display(),
                output.status
            ));
        }
        report.push_str(&format!("==== {name}.cu\n{stdout}{stderr}"));
        // Warnings other than the report still reach the build log.
        for line in stderr.lines().filter(|l| l.contains("warning")) {
            println!("cargo:warning={name}.cu: {line}");
        }
    }
    let path = out_dir.join("resource-usage.txt");
    std::fs::write(&path, report).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(())
}

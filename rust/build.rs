//! Links the static library of zcinfer's CMake build: ZCINFER_LIB_DIR names its build folder
//! (default ../build, relative to this crate). The libraries it depends on (OpenMP, oneDNN,
//! the CUDA runtime) depend on how it was configured, so they are read from that folder's
//! CMakeCache.txt: what CMake found is exactly what the library was built against.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=ZCINFER_LIB_DIR");
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let dir = env::var_os("ZCINFER_LIB_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("../build"));
    let dir = if dir.is_relative() { crate_dir.join(dir) } else { dir };
    let lib = dir.join("libzcinfer.a");
    if !lib.is_file() {
        panic!(
            "zcinfer: {} not found. Build the C library first (cmake -S . -B build && cmake --build build) \
             or point ZCINFER_LIB_DIR at its build folder.",
            lib.display()
        );
    }
    println!("cargo:rerun-if-changed={}", lib.display());
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static=zcinfer");

    let cache_path = dir.join("CMakeCache.txt");
    println!("cargo:rerun-if-changed={}", cache_path.display());
    let cache = fs::read_to_string(&cache_path).unwrap_or_default();
    let get = |key: &str| -> Option<String> {
        cache.lines().find_map(|line| {
            let (lhs, value) = line.split_once('=')?;
            (lhs.split(':').next()? == key).then(|| value.trim().to_string())
        })
    };
    let on = |key: &str| get(key).map_or(false, |v| matches!(v.to_uppercase().as_str(), "ON" | "1" | "TRUE" | "YES"));

    if get("ZCI_SANITIZE").map_or(false, |v| !v.is_empty()) {
        panic!(
            "zcinfer: {} is a sanitizer build (ZCI_SANITIZE); link the crate against a plain build instead",
            dir.display()
        );
    }

    // OpenMP: the runtime CMake chose (libgomp with GCC), by file when the cache names it
    let omp_names = get("OpenMP_C_LIB_NAMES").unwrap_or_else(|| "gomp".to_string());
    for name in omp_names.split(';').filter(|n| !n.is_empty()) {
        match get(&format!("OpenMP_{name}_LIBRARY")) {
            Some(file) if Path::new(&file).is_file() => link_file(Path::new(&file)),
            _ => println!("cargo:rustc-link-lib={name}"),
        }
    }
    if on("ZCI_WITH_DNNL") {
        if let Some(file) = get("DNNL_LIBRARY").filter(|f| Path::new(f).is_file()) {
            link_file(Path::new(&file));
        }
    }
    if on("ZCI_WITH_CUDA") {
        // cuDNN and cuBLAS are not linked: the library opens them when a CUDA session needs them
        // (src/cuda/dl.c), so that a program that only uses the CPU never maps them
        let key = "CUDA_cudart_static_LIBRARY";
        match get(key).filter(|f| Path::new(f).is_file()) {
            Some(file) => link_file(Path::new(&file)),
            None => panic!("zcinfer: {key} is not in {} (a CUDA build needs it)", cache_path.display()),
        }
        // dlopen, the static CUDA runtime's own needs, and the C++ runtime of the .cu objects
        for name in ["dl", "rt", "pthread", "stdc++"] {
            println!("cargo:rustc-link-lib={name}");
        }
    }
    println!("cargo:rustc-link-lib=m");
}

/// Links a library given as a file: /usr/lib/libdnnl.so -> search its folder, link "dnnl".
fn link_file(path: &Path) {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    let stem = file.strip_prefix("lib").unwrap_or(file);
    let (name, kind) = if let Some(n) = stem.strip_suffix(".a") {
        (n, "static")
    } else {
        (stem.split(".so").next().unwrap_or(stem), "dylib")
    };
    if let Some(dir) = path.parent() {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    println!("cargo:rustc-link-lib={kind}={name}");
}

//! The safe API on the models the C tests use: the CPU path everywhere; the device path too
//! when a GPU is present. Models come from the CMake build:
//!   ZCINFER_TEST_FIXTURES (default ../build/tests/fixtures): conv_block.onnx and its numpy
//!     reference, dynbatch.onnx (tests/fixtures/make_fixtures.py);
//!   ZCINFER_TEST_MODELS (default ../build/models): classifier.onnx (tests/models/make_models.py).
//! ctest makes both; scripts/test.sh runs these tests after it. On the GPU machine,
//! scripts/gpu_tests.sh runs this program prebuilt (scripts/build_gpu_bundle.sh), where the
//! CUDA cases, which skip without a GPU, run too.

use std::path::PathBuf;

use zcinfer::{build_engine, cuda_device_count, Device, Options, Precision, Session, Status, Stream};

fn folder(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    let p = if p.is_relative() { PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p) } else { p };
    assert!(p.is_dir(), "{} is missing: run the C test suite first (ctest) or set {var}", p.display());
    p
}

fn fixture(name: &str) -> PathBuf {
    folder("ZCINFER_TEST_FIXTURES", "../build/tests/fixtures").join(name)
}

fn model(name: &str) -> PathBuf {
    folder("ZCINFER_TEST_MODELS", "../build/models").join(name)
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("zcinfer-rust-{}-{name}", std::process::id()))
}

fn read_f32(path: &PathBuf) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn rel_error(a: &[f32], b: &[f32]) -> f64 {
    let err: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (err / norm.max(1e-30)).sqrt()
}

#[test]
fn version_matches_the_crate() {
    assert_eq!(zcinfer::version(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn default_options_are_the_library_defaults() {
    let o = Options::default();
    assert_eq!((o.device, o.precision, o.batch, o.use_cuda_graph), (Device::Cpu, Precision::Fp32, 1, true));
}

#[test]
fn runs_conv_block_against_numpy() {
    let mut s = Session::new(fixture("conv_block.onnx"), &Options::default()).unwrap();
    assert_eq!(s.device(), Device::Cpu);
    assert_eq!(s.inputs().len(), 1);
    assert_eq!(s.inputs()[0].name, "x");
    assert_eq!(s.inputs()[0].shape, vec![1, 3, 8, 8]);
    assert_eq!(s.outputs().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["y", "z"]);
    let x = read_f32(&fixture("conv_block_x.bin"));
    let want = read_f32(&fixture("conv_block_y.bin"));
    let (mut y, mut z) = (vec![0f32; 256], vec![0f32; 256]);
    s.run(&[&x], &mut [&mut y, &mut z]).unwrap();
    assert!(rel_error(&y, &want) < 1e-5, "rel. error {}", rel_error(&y, &want));
    assert_eq!(y, z, "z is y reshaped");
    let sum = s.summary();
    assert_eq!(sum.nodes_in_model, 10);
    assert!(sum.nodes_planned < sum.nodes_in_model);
}

#[test]
fn engine_round_trip_is_bit_identical() {
    let onnx = model("classifier.onnx");
    let engine = temp("classifier.zce");
    build_engine(&onnx, &engine, &Options::default()).unwrap();
    let mut a = Session::new(&onnx, &Options::default()).unwrap();
    let mut b = Session::new(&engine, &Options::default()).unwrap();
    let bytes = std::fs::read(&engine).unwrap();
    let mut c = Session::from_memory(&bytes, &Options::default()).unwrap();
    std::fs::remove_file(&engine).unwrap();
    assert_eq!(a.inputs(), b.inputs());
    assert_eq!(a.outputs(), b.outputs());
    assert_eq!(a.summary(), b.summary());
    let x: Vec<f32> = (0..a.inputs()[0].elements()).map(|i| (i % 255) as f32 / 255.0).collect();
    let n = a.outputs()[0].elements();
    let (mut ya, mut yb, mut yc) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    a.run(&[&x], &mut [&mut ya]).unwrap();
    b.run(&[&x], &mut [&mut yb]).unwrap();
    c.run(&[&x], &mut [&mut yc]).unwrap();
    assert!(ya == yb && ya == yc, "engine outputs differ from the ONNX session's");

    // a session saves itself too
    let again = temp("classifier-again.zce");
    b.save_engine(&again).unwrap();
    assert!(Session::new(&again, &Options::default()).is_ok());
    std::fs::remove_file(&again).unwrap();
}

#[test]
fn the_engine_fixes_the_batch() {
    let engine = temp("dynbatch3.zce");
    build_engine(fixture("dynbatch.onnx"), &engine, &Options { batch: 3, ..Options::default() }).unwrap();
    let mut s = Session::new(&engine, &Options::default()).unwrap();
    std::fs::remove_file(&engine).unwrap();
    assert_eq!(s.inputs()[0].shape, vec![3, 4]);
    let x: Vec<f32> = (0..12).map(|i| i as f32 - 6.0).collect();
    let mut y = vec![0f32; 12];
    s.run(&[&x], &mut [&mut y]).unwrap();
    assert_eq!(y, x.iter().map(|v| v.max(0.0)).collect::<Vec<_>>());
}

#[test]
fn bad_calls_give_errors_with_messages() {
    let e = Session::new(fixture("does_not_exist.onnx"), &Options::default()).err().unwrap();
    assert_eq!(e.status, Status::Io);
    assert!(e.message.contains("does_not_exist.onnx"), "{e}");
    let e = Session::new(fixture("unsupported_op.onnx"), &Options::default()).err().unwrap();
    assert_eq!(e.status, Status::Unsupported);
    assert!(e.message.contains("Det"), "{e}");
    let e = Session::from_memory(b"\x89ZCE\r\n\x1a\nnot really an engine", &Options::default()).err().unwrap();
    assert_eq!(e.status, Status::InvalidModel);

    let mut s = Session::new(fixture("conv_block.onnx"), &Options::default()).unwrap();
    let x = vec![0f32; 191];
    let (mut y, mut z) = (vec![0f32; 256], vec![0f32; 256]);
    let e = s.run(&[&x], &mut [&mut y, &mut z]).unwrap_err();
    assert_eq!(e.status, Status::InvalidArgument);
    assert!(e.message.contains("768") && e.message.contains("764"), "{e}");
    let good = vec![0f32; 192];
    let e = s.run(&[&good], &mut [&mut y]).unwrap_err();
    assert!(e.message.contains("2 outputs, 1 were given"), "{e}");
    let bad = Options { batch: 0, ..Options::default() };
    assert_eq!(Session::new(fixture("conv_block.onnx"), &bad).err().unwrap().status, Status::InvalidArgument);
}

#[test]
fn sessions_free_themselves_and_move_between_threads() {
    for _ in 0..20 {
        let s = Session::new(fixture("conv_block.onnx"), &Options { num_threads: 1, ..Options::default() }).unwrap();
        drop(s);
    }
    let mut s = Session::new(fixture("conv_block.onnx"), &Options::default()).unwrap();
    let handle = std::thread::spawn(move || {
        let x = vec![0.5f32; 192];
        let (mut y, mut z) = (vec![0f32; 256], vec![0f32; 256]);
        s.run(&[&x], &mut [&mut y, &mut z]).map(|_| y)
    });
    assert_eq!(handle.join().unwrap().unwrap().len(), 256);
}

#[test]
fn device_calls_on_a_cpu_session_are_refused() {
    let mut s = Session::new(fixture("conv_block.onnx"), &Options::default()).unwrap();
    let e = s.device_buffers().unwrap_err();
    assert_eq!(e.status, Status::Unsupported);
    assert!(e.message.contains("no device buffers"), "{e}");
    let x = vec![0f32; 192];
    let (mut y, mut z) = (vec![0f32; 256], vec![0f32; 256]);
    // SAFETY: the CPU session refuses before touching the pointers.
    let e = unsafe {
        s.run_device(&[x.as_ptr() as *const _], &[y.as_mut_ptr() as *mut _, z.as_mut_ptr() as *mut _], Stream::SESSION)
    }
    .unwrap_err();
    assert_eq!(e.status, Status::Unsupported);
    assert_eq!(s.write_input(0, &x, Stream::SESSION).unwrap_err().status, Status::Unsupported);
    assert_eq!(s.run_own_buffers(Stream::SESSION).unwrap_err().status, Status::Unsupported);
}

/// With a GPU: the regular run, the session's own buffers, and a zero-copy run on device
/// pointers (the session's own output buffer of a second session), all equal.
#[test]
fn device_paths_agree_with_the_regular_run_on_a_gpu() {
    if cuda_device_count().unwrap() == 0 {
        eprintln!("skipped: no GPU");
        return;
    }
    let opts = Options { device: Device::Cuda, precision: Precision::Fp16, ..Options::default() };
    let mut s = Session::new(model("classifier.onnx"), &opts).unwrap();
    let mut t = Session::new(model("classifier.onnx"), &opts).unwrap();
    assert_eq!(s.device(), Device::Cuda);
    let x: Vec<f32> = (0..s.inputs()[0].elements()).map(|i| (i % 255) as f32 / 255.0).collect();
    let n = s.outputs()[0].elements();
    let mut regular = vec![0f32; n];
    s.run(&[&x], &mut [&mut regular]).unwrap();

    let bufs = s.device_buffers().unwrap();
    assert_eq!(bufs.inputs[0].bytes, x.len() * 4);
    s.write_input(0, &x, Stream::SESSION).unwrap();
    s.run_own_buffers(Stream::SESSION).unwrap();
    s.synchronize(Stream::SESSION).unwrap();
    let mut own = vec![0f32; n];
    s.read_output(0, &mut own, Stream::SESSION).unwrap();
    assert!(rel_error(&own, &regular) < 1e-6);

    // zero-copy: s's input buffer (holding x) into t's output buffer
    let out = t.device_buffers().unwrap().outputs[0];
    // SAFETY: both are device buffers of the right sizes owned by live sessions.
    unsafe { s.run_device(&[bufs.inputs[0].ptr as *const _], &[out.ptr], Stream::SESSION) }.unwrap();
    let mut zero_copy = vec![0f32; n];
    t.read_output(0, &mut zero_copy, Stream::SESSION).unwrap();
    assert!(rel_error(&zero_copy, &regular) < 1e-6);
}

/// With a GPU, in FP32: conv_block against numpy through the regular run and a zero-copy run
/// (device pointers: a second session's own buffers), the same from an engine file planned for
/// CUDA, host memory refused where device memory is required, and sessions created and dropped
/// in a loop (each frees its device memory; a leak would show in the C tests' memory checks).
#[test]
fn cuda_fp32_matches_numpy_on_every_path() {
    if cuda_device_count().unwrap() == 0 {
        eprintln!("skipped: no GPU");
        return;
    }
    let opts = Options { device: Device::Cuda, ..Options::default() };
    let mut s = Session::new(fixture("conv_block.onnx"), &opts).unwrap();
    let mut t = Session::new(fixture("conv_block.onnx"), &opts).unwrap();
    assert_eq!(s.device(), Device::Cuda);
    let x = read_f32(&fixture("conv_block_x.bin"));
    let want = read_f32(&fixture("conv_block_y.bin"));
    let (mut y, mut z) = (vec![0f32; 256], vec![0f32; 256]);
    s.run(&[&x], &mut [&mut y, &mut z]).unwrap();
    assert!(rel_error(&y, &want) < 1e-4, "rel. error {}", rel_error(&y, &want));
    assert_eq!(y, z, "z is y reshaped");

    // zero-copy: t's input buffer (holding x) into t's output buffers, run by s
    let tb = t.device_buffers().unwrap();
    assert_eq!((tb.inputs.len(), tb.outputs.len()), (1, 2));
    t.write_input(0, &x, Stream::SESSION).unwrap();
    // SAFETY: device buffers of the right sizes, owned by a live session and not used meanwhile.
    unsafe { s.run_device(&[tb.inputs[0].ptr as *const _], &[tb.outputs[0].ptr, tb.outputs[1].ptr], Stream::SESSION) }
        .unwrap();
    let (mut yd, mut zd) = (vec![0f32; 256], vec![0f32; 256]);
    t.read_output(0, &mut yd, Stream::SESSION).unwrap();
    t.read_output(1, &mut zd, Stream::SESSION).unwrap();
    assert!(rel_error(&yd, &y) < 1e-6 && rel_error(&zd, &y) < 1e-6, "zero-copy differs from the regular run");

    // host memory where device memory is required
    // SAFETY: the library checks where the pointers live and refuses before touching them.
    let e = unsafe {
        s.run_device(
            &[x.as_ptr() as *const _],
            &[yd.as_mut_ptr() as *mut _, zd.as_mut_ptr() as *mut _],
            Stream::SESSION,
        )
    }
    .unwrap_err();
    assert_eq!(e.status, Status::InvalidArgument, "{e}");

    // an engine file keeps the device
    let engine = temp("conv_block_cuda.zce");
    s.save_engine(&engine).unwrap();
    let mut from_engine = Session::new(&engine, &Options::default()).unwrap();
    std::fs::remove_file(&engine).unwrap();
    assert_eq!(from_engine.device(), Device::Cuda);
    let (mut ye, mut ze) = (vec![0f32; 256], vec![0f32; 256]);
    from_engine.run(&[&x], &mut [&mut ye, &mut ze]).unwrap();
    assert!(rel_error(&ye, &y) < 1e-6, "the engine's output differs");

    for _ in 0..10 {
        drop(Session::new(fixture("conv_block.onnx"), &opts).unwrap());
    }
}

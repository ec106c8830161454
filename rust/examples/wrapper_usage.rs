//! The TensorRT wrapper's Rust usage, step for step, on zcinfer's safe API: load an engine
//! once, regular run (host memory), the session's device buffers (copy in, run on the GPU,
//! copy out), a zero-copy run on device pointers, a short benchmark, cleanup (Drop).
//!
//!   cargo run --release --example wrapper_usage -- MODEL [--cuda]
//!
//! MODEL is an engine file (zcinfer build MODEL.onnx -o MODEL.zce) or an ONNX model; an ONNX
//! model is planned with --cuda in FP16 on the GPU, else on the CPU. On a CPU session the
//! device steps report that they need a CUDA session.

use std::time::Instant;

use zcinfer::{Device, Options, Precision, Session, Stream};

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: wrapper_usage MODEL [--cuda]")?;
    let options = if args.iter().any(|a| a == "--cuda") {
        Options { device: Device::Cuda, precision: Precision::Fp16, ..Options::default() }
    } else {
        Options::default()
    };

    // Step 1-2: create the session (loads the engine once)
    let t = Instant::now();
    let mut session = Session::new(path, &options)?;
    println!("session on {:?} ready in {:.1} ms", session.device(), ms(t));
    let input_info = session.inputs()[0].clone();
    let output_info = session.outputs()[0].clone();
    println!(
        "  input  {} {:?}, output {} {:?}",
        input_info.name, input_info.shape, output_info.name, output_info.shape
    );

    // Step 4: an input (a synthetic image here: a horizontal gradient in each channel)
    let input: Vec<f32> = (0..input_info.elements())
        .map(|i| {
            let w = *input_info.shape.last().unwrap_or(&1) as usize;
            (i % w) as f32 / w as f32
        })
        .collect();
    let mut output = vec![0f32; output_info.elements()];

    // Regular API: host memory in and out
    let t = Instant::now();
    session.run(&[&input], &mut [&mut output])?;
    println!("regular run: {:.2} ms; first values {:?}", ms(t), &output[..output.len().min(5)]);

    // Step 3 and 5: the session's own GPU buffers: copy in, run on the GPU, copy out
    match session.device_buffers() {
        Ok(buffers) => {
            let (d_input, d_output) = (buffers.inputs[0], buffers.outputs[0]);
            println!(
                "GPU buffers: input {:?} ({} bytes), output {:?} ({} bytes)",
                d_input.ptr, d_input.bytes, d_output.ptr, d_output.bytes
            );
            let stream = Stream::SESSION;
            let t = Instant::now();
            session.write_input(0, &input, stream)?;
            let copy_in = ms(t);
            let t = Instant::now();
            // zero-copy: device pointers in and out (here the session's own buffers; any
            // device memory of the right size works, e.g. a decoder's output frame)
            unsafe { session.run_device(&[d_input.ptr as *const _], &[d_output.ptr], stream)? };
            let inference = ms(t);
            let mut result = vec![0f32; output_info.elements()];
            let t = Instant::now();
            session.read_output(0, &mut result, stream)?;
            let copy_out = ms(t);
            let same = result.iter().zip(&output).all(|(a, b)| (a - b).abs() <= 1e-3 * b.abs().max(1.0));
            println!(
                "copy in {copy_in:.2} ms, zero-copy inference {inference:.2} ms, copy out {copy_out:.2} ms; \
                      same as the regular run: {same}"
            );

            // Step 7: benchmark the zero-copy path (own buffers, queued, then waited for)
            let iterations = 100;
            for _ in 0..10 {
                session.run_own_buffers(stream)?;
            }
            session.synchronize(stream)?;
            let t = Instant::now();
            for _ in 0..iterations {
                session.run_own_buffers(stream)?;
            }
            session.synchronize(stream)?;
            let avg = ms(t) / iterations as f64;
            println!("zero-copy: {avg:.2} ms per inference, {:.1} FPS", 1e3 / avg);
        }
        Err(e) => println!("device buffers and zero-copy runs need a CUDA session: {e}"),
    }

    // Step 9: cleanup happens when `session` is dropped
    Ok(())
}

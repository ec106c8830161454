//! Safe Rust bindings to zcinfer, an inference runtime for ONNX models on the CPU and NVIDIA
//! GPUs.
//!
//! A [`Session`] loads an ONNX model or an engine file (see [`build_engine`]), plans it once,
//! and runs it many times: [`Session::run`] on host slices, [`Session::run_device`] on CUDA
//! device pointers with a stream (zero-copy), and the session's own device buffers
//! ([`Session::device_buffers`], [`Session::write_input`], [`Session::run_own_buffers`],
//! [`Session::read_output`]). A session frees everything it holds when dropped.
//!
//! Errors carry the library's status and its message (`zci_last_error`), which names what
//! failed and where.
//!
//! Threading: a `Session` may move between threads (`Send`) but is used by one at a time;
//! every call that runs it takes `&mut self`.
//!
//! ```no_run
//! let mut session = zcinfer::Session::new("yolov5s.onnx", &zcinfer::Options::default())?;
//! let input = vec![0.0f32; session.inputs()[0].elements()];
//! let mut output = vec![0.0f32; session.outputs()[0].elements()];
//! session.run(&[&input], &mut [&mut output])?;
//! # Ok::<(), zcinfer::Error>(())
//! ```

pub mod ffi;

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::{c_int, c_void};
use std::path::Path;
use std::ptr::{self, NonNull};

/// What failed, as the library's status codes say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// NULL pointer, wrong size, bad index, wrong count.
    InvalidArgument,
    /// A file missing or unreadable (or unwritable).
    Io,
    /// A corrupt, truncated or inconsistent model or engine file.
    InvalidModel,
    /// An op, opset, dtype or feature not supported; an engine file planned for another device.
    Unsupported,
    /// A host or device allocation failed.
    OutOfMemory,
    /// CUDA asked for but no usable GPU or driver.
    NoDevice,
    /// A CUDA, cuDNN or cuBLAS call failed.
    DeviceError,
    /// A bug in zcinfer.
    Internal,
    /// A code this crate does not know (a newer library).
    Other(i32),
}

impl Status {
    fn from_raw(code: ffi::zci_status) -> Status {
        match code {
            ffi::ZCI_INVALID_ARGUMENT => Status::InvalidArgument,
            ffi::ZCI_IO => Status::Io,
            ffi::ZCI_INVALID_MODEL => Status::InvalidModel,
            ffi::ZCI_UNSUPPORTED => Status::Unsupported,
            ffi::ZCI_OUT_OF_MEMORY => Status::OutOfMemory,
            ffi::ZCI_NO_DEVICE => Status::NoDevice,
            ffi::ZCI_DEVICE_ERROR => Status::DeviceError,
            ffi::ZCI_INTERNAL => Status::Internal,
            other => Status::Other(other),
        }
    }
}

/// A failed call: the status and the library's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub status: Status,
    pub message: String,
}

impl Error {
    /// The calling thread's last error, for a call that just returned `code`.
    fn last(code: ffi::zci_status) -> Error {
        // SAFETY: zci_last_error returns a NUL-terminated per-thread string, valid until the
        // next call on this thread; it is copied at once.
        let message = unsafe { cstr(ffi::zci_last_error()) };
        Error { status: Status::from_raw(code), message }
    }

    fn invalid(message: String) -> Error {
        Error { status: Status::InvalidArgument, message }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.status, self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn check(code: ffi::zci_status) -> Result<()> {
    if code == ffi::ZCI_OK {
        Ok(())
    } else {
        Err(Error::last(code))
    }
}

/// Copies a C string the library owns; "" for NULL.
unsafe fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

fn c_path(path: &Path) -> Result<CString> {
    let s = path.to_str().ok_or_else(|| Error::invalid(format!("path {} is not UTF-8", path.display())))?;
    CString::new(s).map_err(|_| Error::invalid(format!("path {s:?} contains a NUL byte")))
}

/// The library's version, "MAJOR.MINOR.PATCH".
pub fn version() -> String {
    // SAFETY: static storage.
    unsafe { cstr(ffi::zci_version()) }
}

/// Number of usable CUDA devices (0 without CUDA support, driver or GPU).
pub fn cuda_device_count() -> Result<usize> {
    let mut n: c_int = 0;
    // SAFETY: n is a valid out-pointer.
    check(unsafe { ffi::zci_cuda_device_count(&mut n) })?;
    Ok(n.max(0) as usize)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    Fp16,
}

/// Element types (ONNX's TensorProto.DataType values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    Float32,
    UInt8,
    Int8,
    UInt16,
    Int16,
    Int32,
    Int64,
    Bool,
    Float16,
    Float64,
    UInt32,
    UInt64,
    Other(i32),
}

impl DType {
    fn from_raw(v: ffi::zci_dtype) -> DType {
        match v {
            1 => DType::Float32,
            2 => DType::UInt8,
            3 => DType::Int8,
            4 => DType::UInt16,
            5 => DType::Int16,
            6 => DType::Int32,
            7 => DType::Int64,
            9 => DType::Bool,
            10 => DType::Float16,
            11 => DType::Float64,
            12 => DType::UInt32,
            13 => DType::UInt64,
            other => DType::Other(other),
        }
    }
}

/// Session options; `Options::default()` is the library's defaults (`zci_options_init`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub device: Device,
    /// CUDA device ordinal.
    pub device_id: i32,
    pub precision: Precision,
    /// Value of a symbolic leading (batch) dimension.
    pub batch: i64,
    /// CPU threads; 0 = one per available core.
    pub num_threads: i32,
    /// CUDA FP32: allow TF32 tensor-core math.
    pub allow_tf32: bool,
    /// CUDA FP16: float inputs and outputs are FP16 too.
    pub fp16_io: bool,
    /// CUDA: capture a run once and replay it.
    pub use_cuda_graph: bool,
    /// Base folder of external data for [`Session::from_memory`].
    pub model_dir: Option<String>,
    /// Progress and planning details on stderr.
    pub verbose: bool,
}

fn raw_defaults() -> ffi::zci_options_storage {
    // SAFETY: the storage is plain data (all-zero is valid) and larger than the C struct.
    let mut raw: ffi::zci_options_storage = unsafe { std::mem::zeroed() };
    unsafe { ffi::zci_options_init(&mut raw.options) };
    raw
}

impl Default for Options {
    fn default() -> Options {
        let r = raw_defaults().options;
        Options {
            device: if r.device == 1 { Device::Cuda } else { Device::Cpu },
            device_id: r.device_id,
            precision: if r.precision == 1 { Precision::Fp16 } else { Precision::Fp32 },
            batch: r.batch,
            num_threads: r.num_threads,
            allow_tf32: r.allow_tf32 != 0,
            fp16_io: r.fp16_io != 0,
            use_cuda_graph: r.use_cuda_graph != 0,
            model_dir: None,
            verbose: r.verbose != 0,
        }
    }
}

impl Options {
    /// The C options, and the string `model_dir` points into (keep it alive during the call).
    fn to_raw(&self) -> Result<(ffi::zci_options_storage, Option<CString>)> {
        let mut raw = raw_defaults();
        let o = &mut raw.options;
        o.device = match self.device {
            Device::Cpu => 0,
            Device::Cuda => 1,
        };
        o.device_id = self.device_id;
        o.precision = match self.precision {
            Precision::Fp32 => 0,
            Precision::Fp16 => 1,
        };
        o.batch = self.batch;
        o.num_threads = self.num_threads;
        o.allow_tf32 = self.allow_tf32 as c_int;
        o.fp16_io = self.fp16_io as c_int;
        o.use_cuda_graph = self.use_cuda_graph as c_int;
        o.verbose = self.verbose as c_int;
        let dir = match &self.model_dir {
            Some(d) => {
                Some(CString::new(d.as_str()).map_err(|_| Error::invalid("model_dir contains a NUL byte".into()))?)
            }
            None => None,
        };
        o.model_dir = dir.as_ref().map_or(ptr::null(), |d| d.as_ptr());
        Ok((raw, dir))
    }
}

/// One input or output of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// The planned shape (the batch resolved).
    pub shape: Vec<i64>,
    /// Bytes of the whole tensor.
    pub bytes: usize,
}

impl TensorInfo {
    fn from_raw(r: &ffi::zci_tensor_info) -> TensorInfo {
        let ndim = (r.ndim.max(0) as usize).min(ffi::ZCI_MAX_DIMS);
        TensorInfo {
            // SAFETY: the name belongs to the session, which is alive during this call.
            name: unsafe { cstr(r.name) },
            dtype: DType::from_raw(r.dtype),
            shape: r.shape[..ndim].to_vec(),
            bytes: r.bytes,
        }
    }

    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.shape.iter().map(|&d| d.max(0) as usize).product()
    }
}

/// What a session knows of its model.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub parameters: i64,
    pub flops: f64,
    pub nodes_in_model: i32,
    pub nodes_planned: i32,
    pub opset: i32,
    /// Op types of the loaded model with their counts, most frequent first.
    pub op_counts: Vec<(String, i32)>,
    pub activation_bytes: usize,
}

/// A CUDA stream to queue work on. [`Stream::SESSION`] is the session's own stream (or the
/// one given at creation); another comes from [`Stream::from_raw`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream(*mut c_void);

impl Stream {
    /// The session's own stream.
    pub const SESSION: Stream = Stream(ptr::null_mut());

    /// A `cudaStream_t` created by the caller (or by another library).
    ///
    /// # Safety
    /// `stream` must be a valid CUDA stream of the session's device, or null, for as long as
    /// the `Stream` is used.
    pub unsafe fn from_raw(stream: *mut c_void) -> Stream {
        Stream(stream)
    }

    /// The `cudaStream_t` (null for [`Stream::SESSION`]).
    pub fn as_raw(self) -> *mut c_void {
        self.0
    }
}

/// A CUDA device buffer owned by a session: valid as long as the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceBuffer {
    pub ptr: *mut c_void,
    pub bytes: usize,
}

/// The session's own device buffers, per input and per output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceBuffers {
    pub inputs: Vec<DeviceBuffer>,
    pub outputs: Vec<DeviceBuffer>,
}

/// A planned model, ready to run. Dropping it frees everything it allocated, host and device.
pub struct Session {
    raw: NonNull<ffi::zci_session>,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

// SAFETY: a session may be used from any thread, one at a time (zcinfer.h); running it takes
// &mut self, and Session is not Sync.
unsafe impl Send for Session {}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: raw came from a successful create and is destroyed once.
        unsafe { ffi::zci_session_destroy(self.raw.as_ptr()) }
    }
}

/// Plans the ONNX model at `onnx` with `options` and writes an engine file to `engine`, which
/// [`Session::new`] loads without parsing or planning.
pub fn build_engine(onnx: impl AsRef<Path>, engine: impl AsRef<Path>, options: &Options) -> Result<()> {
    let (o, _dir) = options.to_raw()?;
    let (src, dst) = (c_path(onnx.as_ref())?, c_path(engine.as_ref())?);
    // SAFETY: valid NUL-terminated strings and options for the duration of the call.
    check(unsafe { ffi::zci_build_engine(src.as_ptr(), dst.as_ptr(), &o.options) })
}

impl Session {
    /// Loads an ONNX model or an engine file (recognised by content) and plans it. For an
    /// engine file, device, precision, batch, fp16_io and allow_tf32 come from the file.
    pub fn new(path: impl AsRef<Path>, options: &Options) -> Result<Session> {
        let (o, _dir) = options.to_raw()?;
        let p = c_path(path.as_ref())?;
        let mut raw = ptr::null_mut();
        // SAFETY: valid path, options and out-pointer.
        check(unsafe { ffi::zci_session_create(p.as_ptr(), &o.options, &mut raw) })?;
        Session::wrap(raw)
    }

    /// As [`Session::new`], from the bytes of an ONNX model or engine file.
    pub fn from_memory(bytes: &[u8], options: &Options) -> Result<Session> {
        let (o, _dir) = options.to_raw()?;
        let mut raw = ptr::null_mut();
        // SAFETY: the bytes are only read during the call.
        check(unsafe {
            ffi::zci_session_create_from_memory(bytes.as_ptr() as *const c_void, bytes.len(), &o.options, &mut raw)
        })?;
        Session::wrap(raw)
    }

    fn wrap(raw: *mut ffi::zci_session) -> Result<Session> {
        let raw =
            NonNull::new(raw).ok_or_else(|| Error { status: Status::Internal, message: "NULL session".into() })?;
        // From here on Drop frees it, whatever happens below.
        let mut s = Session { raw, inputs: Vec::new(), outputs: Vec::new() };
        // SAFETY: a live session; indices are in range.
        unsafe {
            for i in 0..ffi::zci_session_input_count(s.raw.as_ptr()) {
                let mut info: ffi::zci_tensor_info = std::mem::zeroed();
                check(ffi::zci_session_input_info(s.raw.as_ptr(), i, &mut info))?;
                s.inputs.push(TensorInfo::from_raw(&info));
            }
            for i in 0..ffi::zci_session_output_count(s.raw.as_ptr()) {
                let mut info: ffi::zci_tensor_info = std::mem::zeroed();
                check(ffi::zci_session_output_info(s.raw.as_ptr(), i, &mut info))?;
                s.outputs.push(TensorInfo::from_raw(&info));
            }
        }
        Ok(s)
    }

    /// The model's inputs, in order.
    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    /// The model's outputs, in order.
    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    /// The device the session runs on.
    pub fn device(&self) -> Device {
        // SAFETY: a live session.
        if unsafe { ffi::zci_session_device(self.raw.as_ptr()) } == 1 {
            Device::Cuda
        } else {
            Device::Cpu
        }
    }

    /// Parameters, FLOPs, node counts and op histogram of the model.
    pub fn summary(&self) -> Summary {
        // SAFETY: a live session; the summary's arrays belong to it and are copied here.
        unsafe {
            let mut s: ffi::zci_summary = std::mem::zeroed();
            // the only failures are NULL arguments, which these are not
            let _ = ffi::zci_session_summary(self.raw.as_ptr(), &mut s);
            let n = s.n_op_types.max(0) as usize;
            let op_counts = (0..n).map(|i| (cstr(*s.op_types.add(i)), *s.op_counts.add(i))).collect();
            Summary {
                parameters: s.parameters,
                flops: s.flops,
                nodes_in_model: s.nodes_in_model,
                nodes_planned: s.nodes_planned,
                opset: s.opset,
                op_counts,
                activation_bytes: s.activation_bytes,
            }
        }
    }

    /// Runs the model on host memory: one slice per input and per output, in order, each of
    /// the tensor's size. The tensors must be float32 (see [`Session::run_bytes`] for others).
    pub fn run(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) -> Result<()> {
        for (what, infos) in [("input", &self.inputs), ("output", &self.outputs)] {
            if let Some(t) = infos.iter().find(|t| t.dtype != DType::Float32) {
                return Err(Error::invalid(format!(
                    "{what} '{}' is {:?}: use run_bytes for tensors that are not float32",
                    t.name, t.dtype
                )));
            }
        }
        let ins: Vec<&[u8]> = inputs.iter().map(|s| as_bytes(s)).collect();
        let mut outs: Vec<&mut [u8]> = outputs.iter_mut().map(|s| as_bytes_mut(s)).collect();
        self.run_bytes(&ins, &mut outs)
    }

    /// Runs the model on host memory given as bytes: one slice per input and per output, in
    /// order, each exactly the tensor's byte size (checked by the library).
    pub fn run_bytes(&mut self, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) -> Result<()> {
        let bin: Vec<ffi::zci_binding> = inputs
            .iter()
            .map(|s| ffi::zci_binding { name: ptr::null(), data: s.as_ptr() as *mut c_void, bytes: s.len() })
            .collect();
        let bout: Vec<ffi::zci_binding> = outputs
            .iter_mut()
            .map(|s| ffi::zci_binding { name: ptr::null(), data: s.as_mut_ptr() as *mut c_void, bytes: s.len() })
            .collect();
        // SAFETY: each binding points at a live slice of the given length; the library reads
        // inputs and writes outputs within those lengths (it checks them against the model).
        check(unsafe { ffi::zci_run(self.raw.as_ptr(), bin.as_ptr(), len_c(&bin)?, bout.as_ptr(), len_c(&bout)?) })
    }

    /// Runs the model on CUDA device memory, queued on `stream`, and waits for that stream.
    /// One pointer per input and per output, in order. A CPU session refuses with
    /// [`Status::Unsupported`]; host pointers are refused.
    ///
    /// # Safety
    /// Each pointer must be device memory holding the tensor's full byte size
    /// (`inputs()[i].bytes`), not freed or written by others until the call returns.
    pub unsafe fn run_device(
        &mut self,
        inputs: &[*const c_void],
        outputs: &[*mut c_void],
        stream: Stream,
    ) -> Result<()> {
        let bin = bindings(inputs.iter().map(|&p| p as *mut c_void), &self.inputs);
        let bout = bindings(outputs.iter().copied(), &self.outputs);
        check(ffi::zci_run_device(
            self.raw.as_ptr(),
            bin.as_ptr(),
            len_c(&bin)?,
            bout.as_ptr(),
            len_c(&bout)?,
            stream.0,
        ))
    }

    /// The session's own device buffers ([`Status::Unsupported`] on a CPU session). A caller's
    /// kernel may write the input buffers and read the output buffers around
    /// [`Session::run_own_buffers`].
    pub fn device_buffers(&mut self) -> Result<DeviceBuffers> {
        let mut b = DeviceBuffers { inputs: Vec::new(), outputs: Vec::new() };
        for (i, t) in self.inputs.iter().enumerate() {
            let mut p = ptr::null_mut();
            // SAFETY: a live session, an index in range, a valid out-pointer.
            check(unsafe { ffi::zci_session_input_device_buffer(self.raw.as_ptr(), i as c_int, &mut p) })?;
            b.inputs.push(DeviceBuffer { ptr: p, bytes: t.bytes });
        }
        for (i, t) in self.outputs.iter().enumerate() {
            let mut p = ptr::null_mut();
            // SAFETY: as above.
            check(unsafe { ffi::zci_session_output_device_buffer(self.raw.as_ptr(), i as c_int, &mut p) })?;
            b.outputs.push(DeviceBuffer { ptr: p, bytes: t.bytes });
        }
        Ok(b)
    }

    /// Copies `data` into the session's own device buffer of input `index`, on `stream`, and
    /// waits for the copy.
    pub fn write_input(&mut self, index: usize, data: &[f32], stream: Stream) -> Result<()> {
        // SAFETY: a live session; the slice is read for its length, which the library checks.
        check(unsafe {
            ffi::zci_session_write_input_buffer(
                self.raw.as_ptr(),
                index_c(index)?,
                data.as_ptr() as *const c_void,
                std::mem::size_of_val(data),
                stream.0,
            )
        })
    }

    /// Copies the session's own device buffer of output `index` into `out`, on `stream`, and
    /// waits for the copy.
    pub fn read_output(&mut self, index: usize, out: &mut [f32], stream: Stream) -> Result<()> {
        // SAFETY: a live session; the slice is written within its length, which the library
        // checks.
        check(unsafe {
            ffi::zci_session_read_output_buffer(
                self.raw.as_ptr(),
                index_c(index)?,
                out.as_mut_ptr() as *mut c_void,
                std::mem::size_of_val(out),
                stream.0,
            )
        })
    }

    /// Runs the model from its own input buffers into its own output buffers, queued on
    /// `stream`; returns once queued (see [`Session::synchronize`]).
    pub fn run_own_buffers(&mut self, stream: Stream) -> Result<()> {
        // SAFETY: a live session; no caller memory is involved.
        check(unsafe { ffi::zci_run_own_buffers(self.raw.as_ptr(), stream.0) })
    }

    /// Waits for the work queued on `stream`.
    pub fn synchronize(&mut self, stream: Stream) -> Result<()> {
        // SAFETY: a live session.
        check(unsafe { ffi::zci_session_synchronize(self.raw.as_ptr(), stream.0) })
    }

    /// Writes the planned model to an engine file (as [`build_engine`] does).
    pub fn save_engine(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let p = c_path(path.as_ref())?;
        // SAFETY: a live session and a valid path.
        check(unsafe { ffi::zci_session_save_engine(self.raw.as_ptr(), p.as_ptr()) })
    }
}

fn as_bytes(s: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and u8 has alignment 1; same memory, same lifetime.
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u8, std::mem::size_of_val(s)) }
}

fn as_bytes_mut(s: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above; every byte pattern is a valid f32.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut u8, std::mem::size_of_val(s)) }
}

/// Bindings for device pointers, each declared with its tensor's full size (the caller's
/// promise, see run_device); pointers beyond the model's count keep the count wrong so that
/// the library refuses it.
fn bindings(ptrs: impl Iterator<Item = *mut c_void>, infos: &[TensorInfo]) -> Vec<ffi::zci_binding> {
    ptrs.enumerate()
        .map(|(i, p)| ffi::zci_binding { name: ptr::null(), data: p, bytes: infos.get(i).map_or(0, |t| t.bytes) })
        .collect()
}

fn len_c<T>(v: &[T]) -> Result<c_int> {
    c_int::try_from(v.len()).map_err(|_| Error::invalid(format!("{} bindings are too many", v.len())))
}

fn index_c(i: usize) -> Result<c_int> {
    c_int::try_from(i).map_err(|_| Error::invalid(format!("index {i} is out of range")))
}

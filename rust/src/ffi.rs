//! The native C API of zcinfer (`include/zcinfer.h`), declared by hand: plain `extern "C"`,
//! no generator. Types and functions keep their C names; see the header for the contract of
//! each (ownership, status codes, threading).

#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_void};

/// `zci_status`: ZCI_OK is 0; the codes are `ZCI_STATUS_MAP` in the header.
pub type zci_status = c_int;
pub const ZCI_OK: zci_status = 0;
pub const ZCI_INVALID_ARGUMENT: zci_status = 1;
pub const ZCI_IO: zci_status = 2;
pub const ZCI_INVALID_MODEL: zci_status = 3;
pub const ZCI_UNSUPPORTED: zci_status = 4;
pub const ZCI_OUT_OF_MEMORY: zci_status = 5;
pub const ZCI_NO_DEVICE: zci_status = 6;
pub const ZCI_DEVICE_ERROR: zci_status = 7;
pub const ZCI_INTERNAL: zci_status = 8;

/// `zci_dtype`: ONNX TensorProto.DataType values.
pub type zci_dtype = c_int;
/// `zci_device`: ZCI_DEVICE_CPU = 0, ZCI_DEVICE_CUDA = 1.
pub type zci_device = c_int;
/// `zci_precision`: ZCI_PRECISION_FP32 = 0, ZCI_PRECISION_FP16 = 1.
pub type zci_precision = c_int;

pub const ZCI_MAX_DIMS: usize = 8;

/// Opaque session handle.
#[repr(C)]
pub struct zci_session {
    _private: [u8; 0],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct zci_tensor_info {
    pub name: *const c_char,
    pub dtype: zci_dtype,
    pub ndim: c_int,
    pub shape: [i64; ZCI_MAX_DIMS],
    pub bytes: usize,
}

/// `zci_options`. The header allows fields to be added at the end in later versions and
/// `zci_options_init` fills the whole C struct: hand it a [`zci_options_storage`], never a
/// bare `zci_options`, so that a newer library cannot write past the end.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct zci_options {
    pub device: zci_device,
    pub device_id: c_int,
    pub precision: zci_precision,
    pub batch: i64,
    pub num_threads: c_int,
    pub allow_tf32: c_int,
    pub fp16_io: c_int,
    pub cuda_stream: *mut c_void,
    pub use_cuda_graph: c_int,
    pub model_dir: *const c_char,
    pub verbose: c_int,
}

/// `zci_options` with room for fields a later library version may add.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct zci_options_storage {
    pub options: zci_options,
    pub spare: [u64; 32],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct zci_summary {
    pub parameters: i64,
    pub flops: f64,
    pub nodes_in_model: c_int,
    pub nodes_planned: c_int,
    pub opset: c_int,
    pub n_op_types: c_int,
    pub op_types: *const *const c_char,
    pub op_counts: *const c_int,
    pub activation_bytes: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct zci_binding {
    pub name: *const c_char,
    pub data: *mut c_void,
    pub bytes: usize,
}

extern "C" {
    pub fn zci_version() -> *const c_char;
    pub fn zci_version_number() -> c_int;
    pub fn zci_status_name(status: zci_status) -> *const c_char;
    pub fn zci_status_string(status: zci_status) -> *const c_char;
    pub fn zci_last_error() -> *const c_char;
    pub fn zci_dtype_size(dtype: zci_dtype) -> usize;
    pub fn zci_dtype_name(dtype: zci_dtype) -> *const c_char;

    pub fn zci_options_init(opts: *mut zci_options);

    pub fn zci_session_create(path: *const c_char, opts: *const zci_options, out: *mut *mut zci_session) -> zci_status;
    pub fn zci_session_create_from_memory(
        data: *const c_void,
        size: usize,
        opts: *const zci_options,
        out: *mut *mut zci_session,
    ) -> zci_status;
    pub fn zci_session_destroy(session: *mut zci_session);
    pub fn zci_session_input_count(session: *const zci_session) -> c_int;
    pub fn zci_session_output_count(session: *const zci_session) -> c_int;
    pub fn zci_session_input_info(session: *const zci_session, index: c_int, info: *mut zci_tensor_info) -> zci_status;
    pub fn zci_session_output_info(session: *const zci_session, index: c_int, info: *mut zci_tensor_info)
        -> zci_status;
    pub fn zci_session_input_index(session: *const zci_session, name: *const c_char) -> c_int;
    pub fn zci_session_output_index(session: *const zci_session, name: *const c_char) -> c_int;
    pub fn zci_session_device(session: *const zci_session) -> zci_device;
    pub fn zci_session_summary(session: *const zci_session, summary: *mut zci_summary) -> zci_status;

    pub fn zci_build_engine(
        onnx_path: *const c_char,
        engine_path: *const c_char,
        opts: *const zci_options,
    ) -> zci_status;
    pub fn zci_session_save_engine(session: *mut zci_session, path: *const c_char) -> zci_status;

    pub fn zci_run(
        session: *mut zci_session,
        inputs: *const zci_binding,
        n_inputs: c_int,
        outputs: *const zci_binding,
        n_outputs: c_int,
    ) -> zci_status;
    pub fn zci_run_simple(
        session: *mut zci_session,
        input: *const f32,
        input_count: usize,
        output: *mut f32,
        output_count: usize,
    ) -> zci_status;

    pub fn zci_run_device(
        session: *mut zci_session,
        inputs: *const zci_binding,
        n_inputs: c_int,
        outputs: *const zci_binding,
        n_outputs: c_int,
        stream: *mut c_void,
    ) -> zci_status;
    pub fn zci_run_device_async(
        session: *mut zci_session,
        inputs: *const zci_binding,
        n_inputs: c_int,
        outputs: *const zci_binding,
        n_outputs: c_int,
        stream: *mut c_void,
    ) -> zci_status;
    pub fn zci_session_input_device_buffer(
        session: *mut zci_session,
        index: c_int,
        ptr: *mut *mut c_void,
    ) -> zci_status;
    pub fn zci_session_output_device_buffer(
        session: *mut zci_session,
        index: c_int,
        ptr: *mut *mut c_void,
    ) -> zci_status;
    pub fn zci_run_own_buffers(session: *mut zci_session, stream: *mut c_void) -> zci_status;
    pub fn zci_session_write_input_buffer(
        session: *mut zci_session,
        index: c_int,
        src: *const c_void,
        bytes: usize,
        stream: *mut c_void,
    ) -> zci_status;
    pub fn zci_session_read_output_buffer(
        session: *mut zci_session,
        index: c_int,
        dst: *mut c_void,
        bytes: usize,
        stream: *mut c_void,
    ) -> zci_status;
    pub fn zci_session_synchronize(session: *mut zci_session, stream: *mut c_void) -> zci_status;

    pub fn zci_cuda_device_count(count: *mut c_int) -> zci_status;
}

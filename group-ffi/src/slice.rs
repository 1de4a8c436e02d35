//! Reading the (pointer, length) pairs C passes in, and writing into the buffers it provides.

use group_core::GroupId;

use crate::result::group_result;

/// Bytes in a group ID.
pub const GROUP_ID_LEN: usize = 52;
const _: () = assert!(GROUP_ID_LEN == group_core::id::GROUP_ID_LEN);

/// Borrows `len` bytes at `ptr`. `len == 0` gives an empty slice whatever `ptr` is.
///
/// # Safety
/// When `len > 0`, `ptr` must point to `len` readable bytes that stay valid and unchanged for `'a`.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], group_result> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
    }
    // SAFETY: the caller promises `len` readable bytes at a non-null `ptr`, valid for 'a.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrows `len` bytes at `ptr` as UTF-8.
///
/// # Safety
/// As [`bytes`].
pub(crate) unsafe fn text<'a>(ptr: *const u8, len: usize) -> Result<&'a str, group_result> {
    // SAFETY: forwarded from this function's own contract.
    let raw = unsafe { bytes(ptr, len) }?;
    std::str::from_utf8(raw).map_err(|_| group_result::GROUP_RESULT_INVALID_UTF8)
}

/// Copies `text` into the caller's buffer and writes its length to `written`. A buffer too small gets
/// nothing copied and `GROUP_RESULT_BUFFER_TOO_SMALL`, with `written` set to the length needed.
///
/// # Safety
/// `buf` must point to `buf_len` writable bytes (or be NULL with `buf_len == 0`); `written` must be NULL or
/// point to a writable `size_t`.
pub(crate) unsafe fn write_out(
    text: &[u8],
    buf: *mut u8,
    buf_len: usize,
    written: *mut usize,
) -> Result<(), group_result> {
    if written.is_null() {
        return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
    }
    // SAFETY: checked non-null above; the caller promises it is writable.
    unsafe { written.write(text.len()) };
    if text.len() > buf_len {
        return Err(group_result::GROUP_RESULT_BUFFER_TOO_SMALL);
    }
    if text.is_empty() {
        return Ok(());
    }
    if buf.is_null() {
        return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
    }
    // SAFETY: `buf` holds `buf_len >= text.len()` writable bytes, per the caller's contract, and cannot
    // overlap `text`, which Rust owns.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf, text.len()) };
    Ok(())
}

/// Reads a 52-byte group ID argument.
///
/// # Safety
/// `group` must be NULL or point to 52 readable bytes.
pub(crate) unsafe fn group_in(group: *const u8) -> Result<GroupId, group_result> {
    if group.is_null() {
        return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
    }
    // SAFETY: non-null and, per the contract, 52 readable bytes.
    let raw = unsafe { bytes(group, GROUP_ID_LEN) }?;
    GroupId::from_bytes(raw).map_err(|_| group_result::GROUP_RESULT_INVALID_ARGUMENT)
}

/// Writes a group ID to a 52-byte out-parameter.
///
/// # Safety
/// `out` must be NULL or point to 52 writable bytes.
pub(crate) unsafe fn write_group(id: &GroupId, out: *mut u8) -> Result<(), group_result> {
    if out.is_null() {
        return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
    }
    // SAFETY: non-null and, per the contract, 52 writable bytes; `id` is owned by Rust.
    unsafe { std::ptr::copy_nonoverlapping(id.as_bytes().as_ptr(), out, GROUP_ID_LEN) };
    Ok(())
}

/// Writes a refusal's protocol code to `refusal` (when not NULL) and returns `GROUP_RESULT_REFUSED`: the one
/// out-parameter written on failure.
///
/// # Safety
/// `refusal` must be NULL or point to a writable `uint16_t`.
pub(crate) unsafe fn refused_with(code: u16, refusal: *mut u16) -> group_result {
    if !refusal.is_null() {
        // SAFETY: non-null and, per the contract, writable.
        unsafe { refusal.write(code) };
    }
    group_result::GROUP_RESULT_REFUSED
}

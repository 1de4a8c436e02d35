//! Result codes and their messages.

use crate::panic::guard;
use crate::slice::write_out;

/// What a `group_` function came to. Codes start at 7000 so that they are not mistaken for errno values
/// or booleans; compare with `GROUP_RESULT_OK`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum group_result {
    /// Success.
    GROUP_RESULT_OK = 7000,
    /// The library panicked (a bug): the call did nothing that can be relied on. Report it.
    GROUP_RESULT_PANIC = 7001,
    /// A required pointer was NULL.
    GROUP_RESULT_NULL_ARGUMENT = 7002,
    /// A string argument was not UTF-8.
    GROUP_RESULT_INVALID_UTF8 = 7003,
    /// The output buffer is too small; the length needed was written.
    GROUP_RESULT_BUFFER_TOO_SMALL = 7004,
    /// The configuration JSON was refused; `group_config_error` tells which key and why.
    GROUP_RESULT_INVALID_CONFIG = 7005,
    /// A listener could not bind its address (in use, or not local).
    GROUP_RESULT_BIND_FAILED = 7006,
    /// The library's runtime (its threads) could not be started.
    GROUP_RESULT_RUNTIME_FAILED = 7007,
    /// `group_server_start` was called on a server that already started.
    GROUP_RESULT_ALREADY_STARTED = 7008,
    /// The server has not been started (or was stopped).
    GROUP_RESULT_NOT_STARTED = 7009,
    /// An argument is out of range (an unknown enum value, a zero where a count is needed).
    GROUP_RESULT_INVALID_ARGUMENT = 7010,
    /// The thing asked for does not exist (a disabled listener, for example).
    GROUP_RESULT_NOT_FOUND = 7011,
    /// The server refused the operation; the protocol error code was written to `*refusal`.
    GROUP_RESULT_REFUSED = 7012,
    /// A blocking call was made from one of the server's own threads (a callback), where it would
    /// deadlock: make it from another thread.
    GROUP_RESULT_WRONG_THREAD = 7013,
    /// The connection closed (or could not be made).
    GROUP_RESULT_DISCONNECTED = 7014,
    /// The server's input queue is full: a call that does not wait was not queued. Retry later, or make
    /// the blocking call.
    GROUP_RESULT_BUSY = 7015,
    /// The handle is not a live server or client: freed already, or never returned by the library.
    GROUP_RESULT_INVALID_HANDLE = 7016,
    /// No answer within the call's timeout. The call's late answer, if it comes, is dropped.
    GROUP_RESULT_TIMED_OUT = 7017,
    /// The server's answer was not the protocol (a group ID of the wrong length, for example).
    GROUP_RESULT_PROTOCOL = 7018,
}

impl group_result {
    /// The message for this code.
    pub fn message(self) -> &'static str {
        match self {
            group_result::GROUP_RESULT_OK => "success",
            group_result::GROUP_RESULT_PANIC => {
                "the group library panicked (a bug; please report it)"
            }
            group_result::GROUP_RESULT_NULL_ARGUMENT => "a required pointer argument was NULL",
            group_result::GROUP_RESULT_INVALID_UTF8 => "a string argument was not valid UTF-8",
            group_result::GROUP_RESULT_BUFFER_TOO_SMALL => {
                "the output buffer is too small; the length needed was written"
            }
            group_result::GROUP_RESULT_INVALID_CONFIG => {
                "the configuration was refused; group_config_error names the key and the problem"
            }
            group_result::GROUP_RESULT_BIND_FAILED => "a listener could not bind its address",
            group_result::GROUP_RESULT_RUNTIME_FAILED => {
                "the library's threads could not be started"
            }
            group_result::GROUP_RESULT_ALREADY_STARTED => "the server was already started",
            group_result::GROUP_RESULT_NOT_STARTED => "the server is not running",
            group_result::GROUP_RESULT_INVALID_ARGUMENT => "an argument is out of range",
            group_result::GROUP_RESULT_NOT_FOUND => {
                "no such thing (for example a disabled listener)"
            }
            group_result::GROUP_RESULT_REFUSED => {
                "the server refused the operation; *refusal holds the protocol error code"
            }
            group_result::GROUP_RESULT_DISCONNECTED => "the connection closed or could not be made",
            group_result::GROUP_RESULT_BUSY => "the server's input queue is full: retry later",
            group_result::GROUP_RESULT_INVALID_HANDLE => {
                "not a live server or client handle: freed already, or never returned by the library"
            }
            group_result::GROUP_RESULT_TIMED_OUT => {
                "no answer within the call's timeout (a late answer is dropped)"
            }
            group_result::GROUP_RESULT_PROTOCOL => "the server's answer was not the protocol",
            group_result::GROUP_RESULT_WRONG_THREAD => {
                "a blocking call from one of the server's own threads (a callback): call it from another"
            }
        }
    }

    fn from_code(code: u32) -> Option<group_result> {
        use group_result::*;
        [
            GROUP_RESULT_OK,
            GROUP_RESULT_PANIC,
            GROUP_RESULT_NULL_ARGUMENT,
            GROUP_RESULT_INVALID_UTF8,
            GROUP_RESULT_BUFFER_TOO_SMALL,
            GROUP_RESULT_INVALID_CONFIG,
            GROUP_RESULT_BIND_FAILED,
            GROUP_RESULT_RUNTIME_FAILED,
            GROUP_RESULT_ALREADY_STARTED,
            GROUP_RESULT_NOT_STARTED,
            GROUP_RESULT_INVALID_ARGUMENT,
            GROUP_RESULT_NOT_FOUND,
            GROUP_RESULT_REFUSED,
            GROUP_RESULT_WRONG_THREAD,
            GROUP_RESULT_DISCONNECTED,
            GROUP_RESULT_BUSY,
            GROUP_RESULT_INVALID_HANDLE,
            GROUP_RESULT_TIMED_OUT,
            GROUP_RESULT_PROTOCOL,
        ]
        .into_iter()
        .find(|r| *r as u32 == code)
    }
}

/// Writes the message for result `code` (UTF-8, not NUL-terminated) into `buf` and its length into
/// `*written`. An unknown code gets a message saying so. Returns `GROUP_RESULT_BUFFER_TOO_SMALL` (with the
/// length needed in `*written`) when `buf_len` is too small; 256 bytes are always enough.
///
/// # Safety
/// `buf` must point to `buf_len` writable bytes (it may be NULL when `buf_len` is 0); `written` must point
/// to a writable `size_t`. Any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_result_message(
    code: u32,
    buf: *mut u8,
    buf_len: usize,
    written: *mut usize,
) -> group_result {
    guard(|| {
        let message =
            group_result::from_code(code).map_or("unknown result code", group_result::message);
        // SAFETY: forwarded from this function's contract.
        unsafe { write_out(message.as_bytes(), buf, buf_len, written) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_short_message_and_unknown_codes_are_named() {
        for code in 7000..7100 {
            let mut buf = [0u8; 256];
            let mut written = 0usize;
            // SAFETY: a real buffer and length, and a real out-parameter.
            let r =
                unsafe { group_result_message(code, buf.as_mut_ptr(), buf.len(), &mut written) };
            assert_eq!(r, group_result::GROUP_RESULT_OK);
            let text = std::str::from_utf8(&buf[..written]).unwrap();
            assert_eq!(
                group_result::from_code(code).is_none(),
                text == "unknown result code"
            );
        }
        let mut small = [0u8; 4];
        let mut written = 0usize;
        // SAFETY: as above, with a buffer too small on purpose.
        let r =
            unsafe { group_result_message(7000, small.as_mut_ptr(), small.len(), &mut written) };
        assert_eq!(r, group_result::GROUP_RESULT_BUFFER_TOO_SMALL);
        assert_eq!(written, "success".len());
        // SAFETY: a NULL out-parameter is refused, not written through.
        let r = unsafe { group_result_message(7000, small.as_mut_ptr(), 4, std::ptr::null_mut()) };
        assert_eq!(r, group_result::GROUP_RESULT_NULL_ARGUMENT);
    }
}

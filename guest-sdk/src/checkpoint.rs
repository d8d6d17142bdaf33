//! State a step saves so that a retry continues where the failed attempt stopped.
//!
//! Save after each unit of work that must not be repeated (a table dumped, a batch of
//! mails sent); at the start, load and skip what is already done. Each save replaces the
//! previous checkpoint.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__bindings::stepwise::step::host;
use crate::StepError;

/// Saves `state` as JSON, replacing the previous checkpoint.
pub fn save<T: Serialize + ?Sized>(state: &T) -> Result<(), StepError> {
    let bytes = serde_json::to_vec(state)
        .map_err(|e| StepError::new(format!("could not encode the checkpoint: {e}")))?;
    save_bytes(&bytes)
}

/// Loads the checkpoint an earlier attempt saved with [`save`]; `Ok(None)` when there is
/// none. A checkpoint that does not parse as `T` is an error rather than a silent fresh
/// start, so a changed state type cannot make a step redo work it already did.
pub fn load<T: DeserializeOwned>() -> Result<Option<T>, StepError> {
    load_bytes()
        .map(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| StepError::new(format!("could not decode the checkpoint: {e}")))
        })
        .transpose()
}

/// Saves raw bytes, replacing the previous checkpoint.
pub fn save_bytes(data: &[u8]) -> Result<(), StepError> {
    host::checkpoint_save(data)
        .map_err(|e| StepError::new(format!("could not save the checkpoint: {e}")))
}

/// Loads the raw bytes an earlier attempt saved; `None` when there is no checkpoint.
pub fn load_bytes() -> Option<Vec<u8>> {
    host::checkpoint_load()
}

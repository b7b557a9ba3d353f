//! Reading the Kubernetes API's answers the same way in every capstan
//! controller.

/// Whether the API server refused a write with 409 Conflict: the object
/// changed since it was read (a stale `resourceVersion`), or another writer
/// created it first. The writer re-reads and decides again; it is never an
/// error to report as such.
#[must_use]
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            Status::failure("refused", "Refused").with_code(code),
        ))
    }

    #[test]
    fn only_a_409_answer_is_a_conflict() {
        assert!(is_conflict(&api(409)));
        for code in [400, 403, 404, 410, 422, 429, 500] {
            assert!(!is_conflict(&api(code)), "{code}");
        }
        let io = kube::Error::Service(Box::new(std::io::Error::other("connection reset")));
        assert!(!is_conflict(&io));
    }
}

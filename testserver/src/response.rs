//! Building HTTP responses: JSON bodies, `Status` errors, warning headers.

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::Value;

use super::status::ApiError;

/// A JSON response.
pub fn json(code: u16, body: &Value, warnings: &[String]) -> Response<Body> {
    bytes(code, serde_json::to_vec(body).unwrap_or_default(), warnings)
}

/// A response with an already serialized JSON body.
pub fn bytes(code: u16, body: Vec<u8>, warnings: &[String]) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    for w in warnings {
        let v = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().append("warning", v);
        }
    }
    r
}

/// A plain-text response, as Go's HTTP mux answers unknown paths.
pub fn plain(code: u16, text: &str) -> Response<Body> {
    let mut r = bytes(code, text.as_bytes().to_vec(), &[]);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A `Status` error response.
pub fn error(e: &ApiError) -> Response<Body> {
    let mut r = match &e.body {
        serde_json::Value::String(text) => plain(e.code, text),
        body => json(e.code, body, &[]),
    };
    for (k, v) in &e.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

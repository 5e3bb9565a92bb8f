//! Event parsing: S3 notifications to (bucket, key) pairs.

use aws_lambda_events::event::s3::S3Event;
use percent_encoding::percent_decode_str;

/// An object named by an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
}

/// Decodes an S3 notification key: form-encoded, so `+` is a space and
/// `%2B` a plus.
pub fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// The objects of an S3 event, in record order; records without a bucket or
/// key (test events, `s3:TestEvent`) are skipped.
pub fn s3_objects(event: &S3Event) -> Vec<ObjectRef> {
    event
        .records
        .iter()
        .filter_map(|r| {
            let bucket = r.s3.bucket.name.clone()?;
            let key = r.s3.object.key.as_deref()?;
            Some(ObjectRef { bucket, key: decode_key(key) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_form_decoded() {
        assert_eq!(decode_key("viewership/day+1/a%2Bb+c.csv"), "viewership/day 1/a+b c.csv");
        assert_eq!(decode_key("viewership/%C3%A9t%C3%A9.csv"), "viewership/été.csv");
        assert_eq!(decode_key("plain/key.csv"), "plain/key.csv");
    }

    #[test]
    fn every_record_of_an_event_is_read() {
        let event: S3Event =
            serde_json::from_str(include_str!("../../../infra/events/s3-object-created.json")).unwrap();
        let objects = s3_objects(&event);
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].bucket, "tvetl-raw-dev");
        assert_eq!(objects[0].key, "viewership/2024-01-01 evening+late.csv");
        assert_eq!(objects[1].key, "channels/channels.json");
    }
}

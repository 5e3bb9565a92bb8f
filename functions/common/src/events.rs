//! Event parsing: S3 notifications to (bucket, key) pairs, directly or as
//! the bodies of SQS messages.

use aws_lambda_events::event::s3::S3Event;
use percent_encoding::percent_decode_str;
use serde::Deserialize;

/// An object named by an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// The bucket's name.
    pub bucket: String,
    /// The object's key, decoded (as stored, not as the notification spells it).
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

/// A batch of SQS messages, as Lambda's SQS event source delivers it.
///
/// Only each message's body is read. (`aws_lambda_events`' own SQS type
/// would pull in `serde_with` for fields this project never looks at.)
#[derive(Debug, Clone, Deserialize)]
pub struct SqsEvent {
    /// The messages, in the order Lambda delivered them.
    #[serde(rename = "Records")]
    pub records: Vec<SqsMessage>,
}

/// One SQS message of a [`SqsEvent`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SqsMessage {
    /// The message's id, which a partial batch failure names.
    #[serde(rename = "messageId", default)]
    pub message_id: String,
    /// Names this receive of the message (to change its visibility).
    #[serde(rename = "receiptHandle", default)]
    pub receipt_handle: String,
    /// `aws:sqs`.
    #[serde(rename = "eventSource")]
    pub event_source: String,
    /// The queue's ARN.
    #[serde(rename = "eventSourceARN", default)]
    pub event_source_arn: String,
    /// Its system attributes.
    #[serde(default)]
    pub attributes: SqsMessageAttributes,
    /// The message's text: here, an S3 notification as JSON.
    pub body: String,
}

/// The system attributes of an [`SqsMessage`] that this project reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SqsMessageAttributes {
    /// How many times the message has been received, this time included.
    #[serde(rename = "ApproximateReceiveCount", default)]
    pub approximate_receive_count: Option<String>,
}

impl SqsMessage {
    /// How many times the message has been received (1 when not said).
    pub fn receive_count(&self) -> u32 {
        self.attributes.approximate_receive_count.as_deref().and_then(|n| n.parse().ok()).unwrap_or(1)
    }
}

/// What the S3 notifications carried by an SQS batch name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuedObjects {
    /// The objects, in message and record order.
    pub objects: Vec<ObjectRef>,
    /// Messages that are not S3 notifications of objects: the `s3:TestEvent`
    /// S3 sends when the notification is configured, or anything else put
    /// on the queue (by message id, with why).
    pub ignored: Vec<(String, String)>,
}

/// The objects that the S3 notifications in `event`'s message bodies name.
/// A message that is not one is set aside rather than failing the batch: a
/// retry could not change it, and it would hold back every notification
/// queued with it.
pub fn queued_objects(event: &SqsEvent) -> QueuedObjects {
    let mut out = QueuedObjects::default();
    for message in &event.records {
        match serde_json::from_str::<S3Event>(&message.body) {
            Ok(notification) => out.objects.extend(s3_objects(&notification)),
            Err(e) => {
                let why = if message.body.contains("s3:TestEvent") {
                    "the s3:TestEvent of a new notification configuration".to_owned()
                } else {
                    format!("not an S3 notification: {e}")
                };
                out.ignored.push((message.message_id.clone(), why));
            }
        }
    }
    out
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

    #[test]
    fn queued_notifications_name_their_objects_and_other_messages_are_set_aside() {
        let event: SqsEvent =
            serde_json::from_str(include_str!("../../../infra/events/sqs-staging-created.json")).unwrap();
        let queued = queued_objects(&event);
        assert_eq!(
            queued.objects,
            [ObjectRef {
                bucket: "tvetl-lake-dev".into(),
                key: "staging/viewership/event_date=2024-01-01/part-0123456789abcdef.parquet".into()
            }]
        );
        assert_eq!(queued.ignored.len(), 1, "{queued:?}");
        assert!(queued.ignored[0].1.contains("s3:TestEvent"), "{queued:?}");

        let other = SqsEvent {
            records: vec![SqsMessage {
                message_id: "m9".into(),
                event_source: "aws:sqs".into(),
                body: "hello".into(),
                ..Default::default()
            }],
        };
        let queued = queued_objects(&other);
        assert!(queued.objects.is_empty());
        assert_eq!(queued.ignored[0].0, "m9");
        assert!(queued.ignored[0].1.starts_with("not an S3 notification"), "{queued:?}");
    }
}

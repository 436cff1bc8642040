"""Protocol drivers. A driver knows its protocol and nothing about MQTT, storage or alerts."""

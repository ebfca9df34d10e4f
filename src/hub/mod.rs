//! IoT Hub service REST client (not yet implemented).

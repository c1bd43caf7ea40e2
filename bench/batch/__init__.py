"""The batch benchmark: Kafka-fed scoring end to end against in-process onnxruntime and a raw Kafka
consume+produce loop on the same records."""

"""Reading an MCAP file back with the MCAP ROS 2 decoder (the robot's bag, the cloud's export)."""

from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory


def read_mcap(path):
    """(topic -> [(schema name, message, decoded)], metadata name -> dict) of a ros2-profile MCAP file."""
    by_topic = {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            by_topic.setdefault(channel.topic, []).append((schema.name, message, decoded))
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
    return by_topic, metadata

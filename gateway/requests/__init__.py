"""Information requests: the panel asks other agencies what they know, by a one-time link."""

"""The Flow Builder stacks: each composes constructs from `flow_constructs`."""

"""A MuJoCo tabletop robot behind the same Robot / Camera interfaces as the real drivers."""

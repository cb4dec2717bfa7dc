def resolve_device(): pass
def seed_everything(): pass

# The factory application: what `cc devices provision --app` puts in slot a when no app is
# given. Importing it starts it; self_test() tells the agent whether a new version works.
VERSION = 1
print("app: version", VERSION)


def self_test():
    return True

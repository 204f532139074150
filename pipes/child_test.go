package pipes

const childRoleEnv = "PIPES_TEST_CHILD"

func runChild(role string) int { return 2 }

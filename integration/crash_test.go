package integration

func crashChildMain() int { return 0 }

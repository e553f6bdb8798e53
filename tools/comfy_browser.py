"""ComfyUI's own web page in headless Chromium (Debian's chromium + chromium-driver,
selenium): load workflows through the page's graph loading, list what the page does
not know, build graphs with its LiteGraph API, serialize them as the canvas saves them,
and take screenshots. Used by the browser check and by tools/build_workflows.py."""

import json
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage")


class ComfyPage:
    def __init__(self, url: str, size=(2400, 1350)):
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in CHROME_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={size[0]},{size[1]}")
        options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='vrwkv-chrome-')}")
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        self.driver.set_script_timeout(120)
        self.driver.get(url)
        deadline = time.time() + 120
        while not self.driver.execute_script("return !!(window.app && window.app.graph && window.LiteGraph)"):
            if time.time() > deadline:
                raise TimeoutError("the ComfyUI page did not become ready")
            time.sleep(0.5)
        time.sleep(2)
        self.close_dialogs()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.driver.quit()

    def close_dialogs(self):
        """Escape closes the template browser a first visit opens (and other dialogs)."""
        for _ in range(3):
            if not self.dialogs():
                return
            self.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
            time.sleep(0.5)

    def dialogs(self) -> list[str]:
        """Texts of the open dialogs (e.g. "Missing Models", missing node types)."""
        return [d.text for d in self.driver.find_elements(By.CSS_SELECTOR, ".p-dialog") if d.is_displayed()]

    def unknown_node_types(self, workflow: dict) -> list[str]:
        types = sorted({n["type"] for n in workflow["nodes"]})
        return self.driver.execute_script(
            "return arguments[0].filter(t => !(t in LiteGraph.registered_node_types))", types)

    def load(self, workflow: dict) -> None:
        self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "app.loadGraphData(arguments[0]).then(() => done(true), e => done(String(e)));", workflow)
        time.sleep(1.5)

    def graph_to_prompt(self) -> dict:
        """The API-format graph the page itself would queue."""
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "app.graphToPrompt().then(p => done(JSON.parse(JSON.stringify(p.output))));")

    def serialize(self) -> dict:
        """The graph as the canvas saves it (Workflow > Save)."""
        return json.loads(self.driver.execute_script("return JSON.stringify(app.graph.serialize())"))

    def node_errors(self) -> list[str]:
        """Nodes the page flags after loading (missing types, bad widget values)."""
        return self.driver.execute_script(
            "return app.graph._nodes.filter(n => n.has_errors || n.type === undefined).map(n => n.type + ' ' + n.id)")

    def fit_view(self, margin: int = 40) -> None:
        """Scales and scrolls the canvas so the whole graph shows (as large as fits)."""
        self.driver.execute_script("""
            const nodes = app.graph._nodes, c = app.canvas.canvas, m = arguments[0];
            const x0 = Math.min(...nodes.map(n => n.pos[0])), y0 = Math.min(...nodes.map(n => n.pos[1] - 30));
            const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0])), y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
            const ratio = window.devicePixelRatio || 1;
            const s = Math.min((c.width / ratio - 2 * m) / (x1 - x0), (c.height / ratio - 2 * m) / (y1 - y0));
            app.canvas.ds.scale = s;
            app.canvas.ds.offset = [m / s - x0, m / s - y0 + 60 / s];
            app.graph.setDirtyCanvas(true, true);""", margin)
        time.sleep(1)

    def screenshot(self, path) -> None:
        self.driver.save_screenshot(str(path))
